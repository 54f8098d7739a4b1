//! Three nodes and two proxies on loopback: a leader killed during writes through a proxy (no failed write, no
//! lost write, none applied twice), a proxy killed (the client carries on through the other), reads spread
//! over followers, and a watch across a leader kill that loses and repeats nothing.

use reinado_client::harness::LocalCluster;
use reinado_client::watch::{WatchItem, event_revision};
use reinado_client::{Client, ClientOptions};
use reinado_proto::v1::{Consistency, EventType, Role};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn cluster_with_proxies() -> (LocalCluster, u64) {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    cluster.add_proxy(&[]);
    cluster.add_proxy(&[]);
    for p in &cluster.proxies {
        wait_serving(&p.addr).await;
    }
    (cluster, leader)
}

async fn wait_serving(addr: &str) {
    for _ in 0..200 {
        if reinado_client::health::check(addr, "", Duration::from_secs(1))
            .await
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy {addr} never served");
}

/// Increments a counter with compare-and-swap and writes a key per increment, until `stop`. Every call must
/// succeed. Returns (increments acknowledged, keys acknowledged).
async fn counter_and_writes(client: Client, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let mut n = 0u64;
    let mut keys = Vec::new();
    for i in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let old = n.to_string();
        let swapped = client
            .cas(
                b"counter",
                Some(old.as_bytes()),
                (n + 1).to_string().as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("increment {n} failed: {e}"));
        assert!(swapped.succeeded, "the only writer's CAS from {n} failed");
        n += 1;
        let key = format!("k{i:06}");
        client
            .put(key.as_bytes(), b"v")
            .await
            .unwrap_or_else(|e| panic!("put {key} failed: {e}"));
        keys.push(key);
    }
    (n, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_writes_through_a_proxy_fails_no_write() {
    let (mut cluster, leader) = cluster_with_proxies().await;
    let client = Client::new(
        vec![cluster.proxies[0].addr.clone()],
        ClientOptions::default(),
    )
    .unwrap();
    client.put(b"counter", b"0").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(counter_and_writes(client.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.node(leader).process.kill();
    let new = cluster.wait_leader(WAIT).await;
    assert_ne!(new, leader);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (increments, keys) = task.await.unwrap();
    assert!(increments > 10, "{increments} increments");
    let counter = client
        .get(b"counter", Consistency::Linearizable)
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(
        counter.value,
        increments.to_string().as_bytes(),
        "each increment applied exactly once"
    );
    for key in &keys {
        let kv = client
            .get(key.as_bytes(), Consistency::Linearizable)
            .await
            .unwrap()
            .kv;
        assert_eq!(
            kv.map(|kv| kv.version),
            Some(1),
            "{key}: lost, or applied twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_carries_on_through_the_other_proxy() {
    let (mut cluster, _) = cluster_with_proxies().await;
    let client = cluster.proxy_client();
    let stop = Arc::new(AtomicBool::new(false));
    client.put(b"counter", b"0").await.unwrap();
    let task = tokio::spawn(counter_and_writes(client.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.proxies[0].process.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (increments, _) = task.await.unwrap();
    let counter = client
        .get(b"counter", Consistency::Linearizable)
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(counter.value, increments.to_string().as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_spread_over_the_followers() {
    let (mut cluster, leader) = cluster_with_proxies().await;
    let client = Client::new(
        vec![cluster.proxies[0].addr.clone()],
        ClientOptions::default(),
    )
    .unwrap();
    client.put(b"k", b"v").await.unwrap();
    // Wait until the proxy sees both followers serving.
    cluster
        .wait_until("followers serve", WAIT, |st| {
            st.values().filter(|s| s.serving).count() == 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut served: BTreeMap<u64, u32> = BTreeMap::new();
    for consistency in [Consistency::Linearizable, Consistency::Serializable] {
        for _ in 0..50 {
            let r = client.get(b"k", consistency).await.unwrap();
            assert_eq!(r.kv.unwrap().value, b"v");
            *served.entry(r.header.unwrap().member_id).or_default() += 1;
        }
    }
    assert!(
        !served.contains_key(&leader),
        "the leader served reads: {served:?}"
    );
    assert_eq!(served.len(), 2, "both followers served reads: {served:?}");
    assert!(
        served.values().all(|&n| n >= 20),
        "spread evenly: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_a_proxy_survives_the_death_of_its_node() {
    let (mut cluster, leader) = cluster_with_proxies().await;
    let client = Client::new(
        vec![cluster.proxies[0].addr.clone()],
        ClientOptions::default(),
    )
    .unwrap();
    // The proxy serves watches from the first node it knows; make that node the leader, then kill it.
    let first = *cluster.nodes.keys().next().unwrap();
    if leader != first {
        client.transfer_leader(first).await.unwrap();
        assert_eq!(cluster.wait_leader(WAIT).await, first);
    }
    let mut watch = client.watch(b"w/".to_vec(), true, 0);
    let Some(Ok(WatchItem::Started { .. })) = watch.recv().await else {
        panic!("the watch starts")
    };
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                client
                    .put(format!("w/{i:04}").as_bytes(), b"v")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.node(first).process.kill();
    writer.await.unwrap();
    let mut seen: Vec<(u64, String)> = Vec::new();
    while seen.len() < 300 {
        let item = tokio::time::timeout(WAIT, watch.recv())
            .await
            .expect("events keep coming")
            .expect("the watch goes on")
            .expect("no error");
        if let WatchItem::Events(events) = item {
            for e in events {
                assert_eq!(e.r#type, EventType::Put as i32);
                let key = String::from_utf8(e.kv.as_ref().unwrap().key.clone()).unwrap();
                seen.push((event_revision(&e), key));
            }
        }
    }
    let keys: Vec<String> = seen.iter().map(|(_, k)| k.clone()).collect();
    let expected: Vec<String> = (0..300).map(|i| format!("w/{i:04}")).collect();
    assert_eq!(keys, expected, "every write seen once, in order");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions increase"
    );
    let st = cluster.statuses().await;
    assert!(st.values().any(|s| s.role == Role::Leader as i32));
}
