//! The real `etcdctl` 3.5 pointed at a proxy in front of three nodes: put, get (linearizable and
//! serializable, served by a follower), txn, del, a background watch, leases (grant, keep-alive, time-to-live,
//! revoke), a lock taken in turns by two contenders, an election, and a lock held across the kill of the
//! leader node: the holder keeps its lease alive through the proxy, so the lock is not handed over, and the
//! proxy serves again once a new leader is elected; and a watch whose node is killed goes on, reopened by the
//! client, without losing or repeating an event. etcdctl comes from `make etcd-bin`; without it the tests
//! say so and skip.

use reinado_client::harness::etcdctl::{self, Background, Etcdctl, b64, granted, keys};
use reinado_client::harness::{LocalCluster, poll_until};
use serde_json::Value;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Three nodes, their leader, and etcdctl pointed at a proxy that knows every node serves.
async fn cluster_behind_a_proxy() -> Option<(LocalCluster, u64, Etcdctl)> {
    let bin = etcdctl::binary()?;
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    let addr = cluster.add_proxy(&[]).addr.clone();
    cluster
        .wait_until("every node serves", WAIT, |st| {
            st.values().filter(|s| s.serving).count() == 3
        })
        .await;
    let serving = poll_until(WAIT, Duration::from_millis(50), async || {
        let health = reinado_client::health::check(&addr, "", Duration::from_secs(1)).await;
        if health.unwrap_or(false) {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    serving.expect("the proxy serves");
    // A status round or two, so that the proxy sees the followers serving too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ctl = Etcdctl {
        bin,
        endpoint: addr,
    };
    Some((cluster, leader, ctl))
}

/// The member that answered a `-w json` command (`header`, or a watch response's `Header`).
fn answered_by(out: &Value) -> u64 {
    let header = if out["header"].is_null() {
        &out["Header"]
    } else {
        &out["header"]
    };
    header["member_id"].as_u64().expect("a member id")
}

/// A `txn -i` input: one compare, one request on success, one on failure.
fn txn_input(compare: &str, success: &str, failure: &str) -> String {
    format!("{compare}\n\n{success}\n\n{failure}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_through_a_proxy() {
    let Some((_cluster, leader, ctl)) = cluster_behind_a_proxy().await else {
        return;
    };
    assert_eq!(ctl.ok(&["put", "foo", "bar"]).trim(), "OK");
    let get = ctl.json(&["get", "foo"]);
    assert_eq!(get["kvs"][0]["value"], b64("bar"));
    assert_ne!(answered_by(&get), leader, "a follower serves reads");
    let serializable = ctl.json(&["get", "foo", "--consistency=s"]);
    assert_ne!(answered_by(&serializable), leader, "{serializable}");

    let holds = txn_input(r#"value("foo") = "bar""#, "put t yes", "put t no");
    assert!(ctl.ok_with(&["txn", "-i"], &holds).contains("SUCCESS"));
    let fails = txn_input(r#"value("foo") = "nope""#, "put t yes", "put t no");
    assert!(ctl.ok_with(&["txn", "-i"], &fails).contains("FAILURE"));
    assert_eq!(ctl.json(&["get", "t"])["kvs"][0]["value"], b64("no"));

    // A watch from the next revision sees a put and a delete.
    let from = ctl.revision() + 1;
    let rev = format!("--rev={from}");
    let watch = Background::start(&ctl, &["watch", "--prefix", "w", &rev, "-w", "json"]);
    ctl.ok(&["put", "w1", "v1"]);
    assert_eq!(ctl.ok(&["del", "w1"]).trim(), "1");
    let events = watch.events(2, WAIT);
    assert_eq!(events[0]["kv"]["key"], b64("w1"));
    assert_eq!(events[0]["kv"]["mod_revision"], from);
    assert_eq!(events[1]["type"], 1, "a DELETE: {events:?}");
    drop(watch);
    assert_eq!(ctl.ok(&["del", "--prefix", "foo"]).trim(), "1");
    assert!(keys(&ctl.json(&["get", "--prefix", "foo"])).is_empty());

    let members = ctl.json(&["member", "list"]);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
    let status = ctl.json(&["endpoint", "status"]);
    assert_eq!(status[0]["Status"]["leader"], leader, "{status}");
    let missing = ctl.fails_with(&["lease", "revoke", "7b"], "");
    assert!(missing.contains("requested lease not found"), "{missing}");

    leases(&ctl);
    lock_in_turns(&ctl);
    election(&ctl);
}

/// Grant, attach, time-to-live with keys, keep-alive once, revoke (which deletes the key).
fn leases(ctl: &Etcdctl) {
    let id = granted(&ctl.ok(&["lease", "grant", "30"]));
    ctl.ok(&["put", "--lease", &id, "leased", "v"]);
    let ttl = ctl.json(&["lease", "timetolive", &id, "--keys"]);
    assert_eq!(ttl["granted-ttl"], 30, "{ttl}");
    assert_eq!(ttl["keys"][0], b64("leased"), "{ttl}");
    let kept = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    assert!(ctl.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert!(keys(&ctl.json(&["get", "leased"])).is_empty());
    assert_eq!(ctl.json(&["lease", "timetolive", &id])["ttl"], -1);
}

/// The create revision of a lock's key: its fencing token.
fn token(ctl: &Etcdctl, key: &str) -> i64 {
    let get = ctl.json(&["get", key]);
    get["kvs"][0]["create_revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is not there: {get}"))
}

/// Two contenders: the second gets the lock only once the first is killed and its lease runs out.
fn lock_in_turns(ctl: &Etcdctl) {
    let first = Background::start(ctl, &["lock", "--ttl=2", "shared"]);
    let first_key = first
        .line(WAIT)
        .expect("the first contender holds the lock");
    assert!(first_key.starts_with("shared/"), "{first_key}");
    let second = Background::start(ctl, &["lock", "--ttl=2", "shared"]);
    let waited = second.line(Duration::from_millis(1500));
    assert_eq!(waited, None, "the second contender must wait");
    let first_token = token(ctl, &first_key);
    let second_key = hand_over(first, &second, "through the proxy");
    assert!(token(ctl, &second_key) > first_token);
    assert!(keys(&ctl.json(&["get", &first_key])).is_empty());
}

/// Kills the lock's `holder` and waits for the `waiter` to print its key, which it returns; says how long
/// the hand-over took (the holder's lease runs out on the leader's clock).
fn hand_over(holder: Background, waiter: &Background, when: &str) -> String {
    let killed = Instant::now();
    drop(holder);
    let key = waiter.line(WAIT).expect("the waiter gets the lock");
    eprintln!(
        "{when}, the lock was handed over {:?} after its holder was killed",
        killed.elapsed()
    );
    key
}

/// One campaigner leads; an observer sees its proposal.
fn election(ctl: &Etcdctl) {
    let campaign = Background::start(ctl, &["elect", "fleet", "alpha"]);
    let won = campaign.line(WAIT).expect("the campaigner is elected");
    assert!(won.starts_with("fleet/"), "{won}");
    let observer = Background::start(ctl, &["elect", "--listen", "fleet"]);
    let seen: Vec<String> = (0..2).filter_map(|_| observer.line(WAIT)).collect();
    assert!(seen.iter().any(|l| l == "alpha"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_through_a_proxy_survives_the_leaders_death() {
    let Some((mut cluster, leader, ctl)) = cluster_behind_a_proxy().await else {
        return;
    };
    let mut holder = Background::start(&ctl, &["lock", "--ttl=3", "x"]);
    let key = holder.line(WAIT).expect("the holder takes the lock");
    let lease = key.rsplit('/').next().expect("x/<lease>").to_string();
    let held = token(&ctl, &key);
    let waiter = Background::start(&ctl, &["lock", "--ttl=3", "x"]);
    assert_eq!(
        waiter.line(Duration::from_secs(1)),
        None,
        "the lock is held"
    );

    cluster.node(leader).process.kill();
    let new = cluster.wait_leader(WAIT).await;
    assert_ne!(new, leader);
    let elected = Instant::now();
    // The holder renews its lease through the proxy on the new leader: no hand-over, however long we wait.
    let handed = waiter.line(Duration::from_secs(5));
    assert_eq!(
        handed, None,
        "the lock was handed over while its holder lived"
    );
    assert!(holder.is_running(), "the holder lost its session");
    let ttl = ctl.json(&["lease", "timetolive", &lease]);
    assert!(ttl["ttl"].as_i64().is_some_and(|t| t > 0), "{ttl}");
    eprintln!(
        "{:?} after the election, the lock is still held",
        elected.elapsed()
    );

    put_once_served(&ctl, "after", "failover").await;
    let get = ctl.json(&["get", "after"]);
    assert_eq!(get["kvs"][0]["value"], b64("failover"));
    assert_eq!(token(&ctl, &key), held, "the holder's key is the same");

    let next = hand_over(holder, &waiter, "after the failover");
    assert!(token(&ctl, &next) > held);
    assert!(keys(&ctl.json(&["get", &key])).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_a_proxy_goes_on_when_its_node_dies() {
    let Some((mut cluster, _, ctl)) = cluster_behind_a_proxy().await else {
        return;
    };
    let watch = Background::start(&ctl, &["watch", "--prefix", "m", "-w", "json"]);
    // The watch is open once a put made after it shows (a key per try); the answer names its node.
    let mut tries = 0;
    let first: Value = poll_until(WAIT, Duration::from_millis(100), async || {
        tries += 1;
        ctl.ok(&["put", &format!("m1.{tries}"), "v"]);
        let line = watch.line(Duration::from_millis(500)).ok_or(())?;
        Ok::<Value, ()>(serde_json::from_str(&line).expect("a JSON watch response"))
    })
    .await
    .expect("the watch sees a put");
    let mut seen: Vec<String> = event_keys(&first["Events"]);
    cluster.node(answered_by(&first)).process.kill();
    put_once_served(&ctl, "m2", "v").await;
    // The client reopened its watch (the proxy ended the stream with UNAVAILABLE) from the next revision.
    while !seen.contains(&b64("m2")) {
        seen.extend(event_keys(&Value::from(watch.events(1, WAIT))));
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "an event repeated: {seen:?}");
}

/// Puts `key` through etcdctl as soon as the endpoint serves it again (after a node's death), within the wait.
async fn put_once_served(ctl: &Etcdctl, key: &str, value: &str) {
    let put = poll_until(WAIT, Duration::from_millis(100), async || {
        let out = ctl.run(&["put", key, value], "");
        if out.status.success() {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    put.unwrap_or_else(|out| panic!("put {key} was never served: {out:?}"));
}

/// The keys of a watch response's events, as printed (base64).
fn event_keys(events: &Value) -> Vec<String> {
    let events = events.as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| e["kv"]["key"].as_str().unwrap_or_default().to_string())
        .collect()
}
