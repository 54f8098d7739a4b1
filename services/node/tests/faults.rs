//! The Fault API: an isolated leader cannot commit, the majority elects another, and on healing the old leader
//! steps down; no write is lost or applied twice. Without REINADO_FAULT_INJECTION the API refuses.

use reinado_client::harness::LocalCluster;
use reinado_client::{Client, ClientError, ClientOptions};
use reinado_proto::v1::{Consistency, IsolateRequest, Role, StepDownRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Increments the counter at `key` with compare-and-swap until `stop`; returns how many increments succeeded.
async fn increment_until(client: Client, key: &'static [u8], stop: Arc<AtomicBool>) -> u64 {
    let mut done = 0u64;
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(current) = client.get(key, Consistency::Linearizable).await else {
            continue;
        };
        let old = current.kv.map(|kv| kv.value);
        let n: u64 = old
            .as_deref()
            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        match client
            .cas(key, old.as_deref(), (n + 1).to_string().as_bytes())
            .await
        {
            Ok(r) if r.succeeded => done += 1,
            Ok(_) => {}
            Err(e) => eprintln!("increment failed: {e}"),
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_commit_and_steps_down_on_healing() {
    let mut cluster = LocalCluster::start(3, &[("REINADO_FAULT_INJECTION", "true")]);
    let old = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    client.put(b"counter", b"0").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = tokio::spawn(increment_until(client.clone(), b"counter", stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let old_addr = cluster.nodes[&old].client_addr.clone();
    let old_term = cluster.statuses().await[&old].term;
    let resp = client
        .fault(&old_addr)
        .unwrap()
        .isolate(IsolateRequest {
            peers: vec![],
            duration_ms: 3000,
        })
        .await
        .unwrap();
    assert!(resp.into_inner().message.contains("isolated"));

    // The isolated leader cannot commit a write.
    let only_old = Client::new(
        vec![old_addr.clone()],
        ClientOptions {
            timeout: Duration::from_millis(1500),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let err = only_old.put(b"minority", b"x").await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err}");

    // The majority elects a new leader meanwhile.
    let st = cluster
        .wait_until("the majority elects a new leader", WAIT, |st| {
            st.values()
                .any(|s| s.id != old && s.role == Role::Leader as i32 && s.term > old_term)
        })
        .await;
    let new = st
        .values()
        .find(|s| s.id != old && s.role == Role::Leader as i32)
        .unwrap()
        .id;

    // After the isolation ends the old leader follows the new one.
    let leader = cluster.wait_leader(WAIT).await;
    assert_ne!(leader, old);
    assert!(leader == new || cluster.statuses().await[&leader].term > st[&new].term);
    stop.store(true, Ordering::Relaxed);
    let increments = counter.await.unwrap();
    let value = client
        .get(b"counter", Consistency::Linearizable)
        .await
        .unwrap();
    let value: u64 = String::from_utf8(value.kv.unwrap().value)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        value, increments,
        "every acknowledged increment applied exactly once"
    );
    assert!(increments > 5, "{increments} increments");
    let minority = client
        .get(b"minority", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(
        minority.kv.is_none(),
        "the write to the isolated leader never committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_api_is_off_by_default() {
    let mut cluster = LocalCluster::start(1, &[]);
    cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    let addr = cluster.nodes[&1].client_addr.clone();
    let err = client
        .fault(&addr)
        .unwrap()
        .step_down(StepDownRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("REINADO_FAULT_INJECTION=true"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_on_request() {
    let mut cluster = LocalCluster::start(3, &[("REINADO_FAULT_INJECTION", "true")]);
    let old = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    let addr = cluster.nodes[&old].client_addr.clone();
    let term = cluster.statuses().await[&old].term;
    client
        .fault(&addr)
        .unwrap()
        .step_down(StepDownRequest {})
        .await
        .unwrap();
    cluster
        .wait_until("a new term with a leader", WAIT, |st| {
            st.values()
                .any(|s| s.role == Role::Leader as i32 && s.term > term)
        })
        .await;
    client.put(b"after", b"1").await.unwrap();
}
