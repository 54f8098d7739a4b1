//! `kill -9` of the leader during a stream of writes, and the killed node's catch-up after restart: from the
//! log, and by snapshot once the others compacted past it.

use reinado_client::Client;
use reinado_client::harness::LocalCluster;
use reinado_proto::v1::Consistency;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

const ELECTION: Duration = Duration::from_secs(15);

/// Writes keys `{prefix}{i}` one after another until `stop`; returns the acknowledged ones.
fn writer(client: Client, prefix: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && i < 100_000 {
            let key = format!("{prefix}{i:06}");
            match client.put(key.as_bytes(), key.as_bytes()).await {
                Ok(_) => acked.push(key),
                Err(e) => eprintln!("write {key} failed: {e}"),
            }
            i += 1;
        }
        acked
    })
}

/// Every acknowledged key reads back, written exactly once (version 1: a retry applied twice would be 2).
async fn check_acked(client: &Client, acked: &[String]) {
    for key in acked {
        let kv = client
            .get(key.as_bytes(), Consistency::Linearizable)
            .await
            .unwrap()
            .kv
            .unwrap_or_else(|| panic!("acknowledged write {key} was lost"));
        assert_eq!(kv.value, key.as_bytes());
        assert_eq!(kv.version, 1, "{key} was applied more than once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write_and_it_catches_up_from_the_log() {
    let mut cluster = LocalCluster::start(3, &[]);
    let old = cluster.wait_leader(ELECTION).await;
    let stop = Arc::new(AtomicBool::new(false));
    let task = writer(cluster.client(), "w", stop.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Its own snapshot (the first is taken just past the bootstrap entries); catching up must not need one.
    let own_snapshot = cluster.statuses().await[&old].snapshot_index;
    cluster.node(old).process.kill();
    let new = cluster.wait_leader(ELECTION).await;
    assert_ne!(new, old);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = task.await.unwrap();
    assert!(
        acked.len() > 20,
        "writes resumed: {} acknowledged",
        acked.len()
    );
    let client = cluster.client();
    check_acked(&client, &acked).await;

    cluster.node(old).process.start();
    let target = cluster.statuses().await[&new].commit;
    let st = cluster
        .wait_until("the restarted node catches up", ELECTION, |st| {
            st.get(&old)
                .is_some_and(|s| s.applied >= target && s.leader_id == new)
        })
        .await;
    assert_eq!(
        st[&old].snapshot_index, own_snapshot,
        "caught up from the log"
    );
    let addr = cluster.nodes[&old].client_addr.clone();
    let local = Client::new(vec![addr], Default::default()).unwrap();
    let last = acked.last().unwrap();
    let kv = local
        .get(last.as_bytes(), Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(kv.header.unwrap().member_id, old);
    assert_eq!(kv.kv.unwrap().value, last.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_a_compaction_catches_up_by_snapshot() {
    // 450 entries behind: beyond the catch-up margin a compaction keeps.
    let vars = [
        ("REINADO_SNAPSHOT_ENTRIES", "100"),
        ("REINADO_SNAPSHOT_CATCHUP_ENTRIES", "50"),
    ];
    let mut cluster = LocalCluster::start(3, &vars);
    let leader = cluster.wait_leader(ELECTION).await;
    let client = cluster.client();
    let behind = cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap();
    client.put(b"before", b"1").await.unwrap();
    cluster.node(behind).process.kill();
    for i in 0..450 {
        client
            .put(format!("s{i:04}").as_bytes(), b"x")
            .await
            .unwrap();
    }
    let st = cluster.statuses().await;
    assert!(
        st[&leader].snapshot_index >= 400,
        "the leader compacted: {:?}",
        st[&leader]
    );
    cluster.node(behind).process.start();
    let target = st[&leader].commit;
    let st = cluster
        .wait_until("the node behind catches up", ELECTION, |st| {
            st.get(&behind).is_some_and(|s| s.applied >= target)
        })
        .await;
    assert!(
        st[&behind].snapshot_index > 100,
        "it installed a snapshot: {:?}",
        st[&behind]
    );
    assert!(
        cluster.nodes[&behind]
            .process
            .log()
            .contains("installed a snapshot from the leader"),
        "{}",
        cluster.logs()
    );
    let local = Client::new(
        vec![cluster.nodes[&behind].client_addr.clone()],
        Default::default(),
    )
    .unwrap();
    for key in ["before", "s0000", "s0449"] {
        let got = local
            .get(key.as_bytes(), Consistency::Serializable)
            .await
            .unwrap();
        assert!(got.kv.is_some(), "{key} is on the node that was behind");
    }
    // It keeps replicating normally after the snapshot.
    let put = client.put(b"after", b"2").await.unwrap();
    cluster
        .wait_until("the node applies new writes", ELECTION, |st| {
            st.get(&behind).is_some_and(|s| s.applied >= put.revision)
        })
        .await;
}
