//! A member whose data dir is lost (defect 1 of issue 9): with the same configuration and an empty data dir it
//! must not come back as a voter. It refuses to start and says what to do; once the operator removed it, the
//! same node joins again as a learner, catches up and is promoted.

use reinado_client::harness::LocalCluster;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_lost_disk_is_refused_then_replaced() {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    for i in 0..20 {
        client
            .put(format!("before{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let victim = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    // Wait until the victim is recorded as having taken part (a leader heard it acknowledge its log).
    let commit = cluster.statuses().await[&leader].commit;
    cluster
        .wait_until("the victim catches up", WAIT, |st| {
            st.get(&victim).is_some_and(|s| s.applied >= commit)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let node = cluster.node(victim);
    node.process.kill();
    std::fs::remove_dir_all(&node.data_dir).unwrap();
    node.process.start();
    let code = node.process.wait_exit(WAIT);
    assert!(
        code.is_some_and(|c| c != 0),
        "the node must stop, not serve: {code:?}\n{}",
        node.process.log()
    );
    let log = node.process.log();
    assert!(log.contains("its disk was lost"), "{log}");
    assert!(
        log.contains(&format!("reinado members remove {victim}")),
        "{log}"
    );

    // The operator's answer: remove it; the same node, started again with its empty data dir, joins as a
    // learner and catches up. A member that has not applied the removal yet may still say it took part, so
    // the start is retried, as a supervisor would.
    client.remove_member(victim).await.unwrap();
    let node = cluster.node(victim);
    for attempt in 0.. {
        std::fs::remove_dir_all(&node.data_dir).unwrap();
        node.process.start();
        if node.process.wait_exit(Duration::from_secs(2)).is_none() {
            break;
        }
        assert!(attempt < 10, "still refused: {}", node.process.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    client.put(b"after", b"v").await.unwrap();
    let commit = cluster.statuses().await[&leader].commit;
    cluster
        .wait_until("the replaced node is a caught-up voter again", WAIT, |st| {
            st.get(&victim).is_some_and(|s| s.applied >= commit)
                && st
                    .get(&leader)
                    .is_some_and(|l| l.members.iter().any(|m| m.id == victim && m.voter))
        })
        .await;
}
