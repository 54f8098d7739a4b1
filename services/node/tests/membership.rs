//! Membership changes on a live cluster: a fourth node joins through `REINADO_JOIN` (as a learner, promoted
//! once caught up), then a node is removed, while a writer keeps writing.

use reinado_client::Client;
use reinado_client::harness::LocalCluster;
use reinado_proto::v1::{Consistency, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_leaves_while_the_cluster_serves() {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    for i in 0..50 {
        client
            .put(format!("pre{i}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 50_000 {
                let key = format!("during{i:05}");
                client
                    .put(key.as_bytes(), b"v")
                    .await
                    .expect("the cluster keeps serving");
                acked.push(key);
                i += 1;
            }
            acked
        })
    };

    // Join through a follower: it redirects the request to the leader.
    let follower = cluster
        .nodes
        .values()
        .find(|n| n.id != leader)
        .unwrap()
        .client_addr
        .clone();
    cluster.add_joining_node(4, &follower);
    let st = cluster
        .wait_until("node 4 joins and is promoted to voter", WAIT, |st| {
            st.get(&leader).is_some_and(|s| {
                s.members
                    .iter()
                    .any(|m| m.id == 4 && m.voter && m.lag < 100)
            }) && st.get(&4).is_some_and(|s| s.role == Role::Follower as i32)
        })
        .await;
    assert_eq!(st[&leader].members.len(), 4);
    let joined = Client::new(
        vec![cluster.nodes[&4].client_addr.clone()],
        Default::default(),
    )
    .unwrap();
    let pre = joined
        .get(b"pre0", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(
        pre.kv.is_some(),
        "node 4 has the data written before it joined"
    );

    // Remove a follower other than the new node.
    let gone = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader && id != 4)
        .unwrap();
    let resp = client.remove_member(gone).await.unwrap();
    assert_eq!(resp.members.len(), 3);
    assert!(resp.members.iter().all(|m| m.id != gone));
    cluster.node(gone).process.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "{} writes during the changes",
        acked.len()
    );
    let last = acked.last().unwrap();
    let got = joined
        .get(last.as_bytes(), Consistency::Linearizable)
        .await
        .unwrap();
    assert!(got.kv.is_some());

    // Adding the same member again, once it took part, is refused: only a lost disk asks that, and an
    // empty log must not come back as a voter. Adding a taken id at another address is refused too.
    let again = client
        .add_member(reinado_proto::v1::AddMemberRequest {
            id: 4,
            peer_addr: cluster.nodes[&4].peer_addr.clone(),
            client_addr: String::new(),
            learner: false,
        })
        .await
        .unwrap_err();
    assert!(again.to_string().contains("remove it first"), "{again}");
    let clash = client
        .add_member(reinado_proto::v1::AddMemberRequest {
            id: 4,
            peer_addr: "127.0.0.1:1".into(),
            client_addr: String::new(),
            learner: false,
        })
        .await
        .unwrap_err();
    assert!(clash.to_string().contains("already a member"), "{clash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_on_a_graceful_stop() {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    let target = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap();
    let resp = client.transfer_leader(target).await.unwrap();
    assert_eq!(resp.leader_id, target);
    assert_eq!(cluster.wait_leader(WAIT).await, target);

    // SIGTERM on the leader hands leadership over before exiting with 0.
    let code = cluster
        .node(target)
        .process
        .terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", cluster.logs());
    assert!(
        cluster.nodes[&target]
            .process
            .log()
            .contains("handing leadership over"),
        "{}",
        cluster.logs()
    );
    let next = cluster.wait_leader(Duration::from_secs(3)).await;
    assert_ne!(next, target);
    client.put(b"after-stop", b"1").await.unwrap();
}
