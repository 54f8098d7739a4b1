//! The real `etcdctl` 3.5.1 against Reinado nodes: etcd's v3 API on the client port.
//!
//! One test runs a single node through put, get, get --prefix, txn -i, watch, del --prefix, member list,
//! endpoint status, compaction, and etcd's errors (a read below the compaction, a txn of 129 operations, a key
//! put twice in a txn, an empty key); the other points etcdctl at a follower of a three-node cluster, which
//! forwards the writes to the leader. etcdctl comes from `make etcd-bin` (which `make test` runs first), in
//! the workspace's `target/etcd/bin`; without it the tests say so and skip. The etcdctl helpers are
//! `reinado_client::harness::etcdctl`, shared with the proxy's etcdctl tests.

use reinado_client::harness::etcdctl::{self, Background, Etcdctl, b64, granted, keys};
use reinado_client::harness::{LocalCluster, poll_until};
use reinado_proto::etcd::etcdserverpb::{PutRequest, kv_client::KvClient};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn value_of(ctl: &Etcdctl, key: &str) -> String {
    let get = ctl.json(&["get", key]);
    get["kvs"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A txn for `etcdctl txn -i`: compares, success requests, failure requests, each ended by an empty line.
fn txn_input(compares: &[&str], success: &[String], failure: &[String]) -> String {
    let mut input = String::new();
    for section in [
        compares.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        success.to_vec(),
        failure.to_vec(),
    ] {
        for line in section {
            input.push_str(&line);
            input.push('\n');
        }
        input.push('\n');
    }
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_single_node() {
    let Some(bin) = etcdctl::binary() else { return };
    let mut cluster = LocalCluster::start(1, &[]);
    cluster.wait_leader(WAIT).await;
    let addr = cluster.nodes[&1].client_addr.clone();
    let ctl = Etcdctl {
        bin,
        endpoint: addr.clone(),
    };

    assert_eq!(ctl.ok(&["put", "foo", "bar"]).trim(), "OK");
    let get = ctl.json(&["get", "foo"]);
    assert_eq!(keys(&get), [b64("foo")]);
    assert_eq!(get["kvs"][0]["value"], b64("bar"));
    assert_eq!(get["header"]["member_id"], 1);
    assert!(get["header"]["cluster_id"].as_u64().is_some_and(|c| c != 0));
    let put_revision = get["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert!(get["header"]["revision"].as_i64().unwrap() >= put_revision);

    ctl.ok(&["put", "foo2", "baz"]);
    ctl.ok(&["put", "other", "x"]);
    let prefix = ctl.json(&["get", "--prefix", "foo"]);
    assert_eq!(keys(&prefix), [b64("foo"), b64("foo2")]);
    assert_eq!(prefix["count"], 2);
    assert_eq!(ctl.ok(&["get", "foo", "--print-value-only"]).trim(), "bar");

    // txn -i: the comparison holds, then it does not.
    let holds = txn_input(
        &[r#"value("foo") = "bar""#],
        &["put t yes".into()],
        &["put t no".into()],
    );
    assert!(ctl.ok_with(&["txn", "-i"], &holds).contains("SUCCESS"));
    assert_eq!(value_of(&ctl, "t"), b64("yes"));
    let fails = txn_input(
        &[r#"value("foo") = "nope""#, r#"create("foo") > "0""#],
        &["put t yes".into()],
        &["put t no".into(), "get foo".into()],
    );
    let out = ctl.ok_with(&["txn", "-i"], &fails);
    assert!(out.contains("FAILURE") && out.contains("bar"), "{out}");
    assert_eq!(value_of(&ctl, "t"), b64("no"));

    // A watch from the next revision sees a put and a delete.
    let from = ctl.revision() + 1;
    let rev = format!("--rev={from}");
    let watch = Background::start(&ctl, &["watch", "--prefix", "w", &rev, "-w", "json"]);
    ctl.ok(&["put", "w1", "v1"]);
    ctl.ok(&["del", "w1"]);
    let events = watch.events(2, WAIT);
    assert_eq!(events[0]["kv"]["key"], b64("w1"));
    assert_eq!(events[0]["kv"]["value"], b64("v1"));
    assert_eq!(events[0]["kv"]["mod_revision"], from);
    assert_eq!(events[1]["type"], 1, "a DELETE: {events:?}");
    drop(watch);

    assert_eq!(ctl.ok(&["del", "--prefix", "foo"]).trim(), "2");
    assert!(keys(&ctl.json(&["get", "--prefix", "foo"])).is_empty());

    let members = ctl.json(&["member", "list"]);
    let members = members["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["ID"], 1);
    assert_eq!(members[0]["name"], "node-1");
    assert_eq!(members[0]["clientURLs"][0], format!("http://{addr}"));

    // A learner added (it never starts: a learner does not count towards the quorum), then removed.
    let added = ctl.ok(&[
        "member",
        "add",
        "n2",
        "--learner",
        "--peer-urls=http://127.0.0.1:1",
    ]);
    assert!(added.contains("Member                2 added"), "{added}");
    let listed = ctl.ok(&["member", "list"]);
    assert!(
        listed.contains("2, unstarted, , http://127.0.0.1:1, , true"),
        "{listed}"
    );
    // It holds nothing, so it cannot be promoted yet; nor can a voter, nor a stranger.
    for (id, refusal) in [
        (
            "2",
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        ("1", "etcdserver: can only promote a learner member"),
        ("9", "etcdserver: member not found"),
    ] {
        let err = ctl.fails_with(&["member", "promote", id], "");
        assert!(err.contains(refusal), "promote {id}: {err}");
    }
    assert!(
        ctl.ok(&["member", "remove", "2"])
            .contains("Member                2 removed")
    );
    assert_eq!(
        ctl.json(&["member", "list"])["members"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let status = ctl.json(&["endpoint", "status"]);
    let status = &status[0]["Status"];
    assert_eq!(status["version"], "3.5.0");
    assert_eq!(status["leader"], 1);
    assert!(status["raftTerm"].as_u64().is_some_and(|t| t >= 1));
    assert!(
        status["raftIndex"]
            .as_u64()
            .is_some_and(|i| i >= put_revision as u64)
    );

    // etcd's errors, with etcd's messages.
    let now = ctl.revision();
    let compacted = ctl.ok(&["compaction", &now.to_string()]);
    assert_eq!(compacted.trim(), format!("compacted revision {now}"));
    let below = ctl.fails_with(&["get", "foo", &format!("--rev={put_revision}")], "");
    assert!(
        below.contains("etcdserver: mvcc: required revision has been compacted"),
        "{below}"
    );
    let watch_below = ctl.fails_with(&["watch", "foo", &format!("--rev={put_revision}")], "");
    assert!(
        watch_below.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "{watch_below}"
    );
    let future = ctl.fails_with(&["get", "foo", &format!("--rev={}", now + 100)], "");
    assert!(
        future.contains("etcdserver: mvcc: required revision is a future revision"),
        "{future}"
    );
    let many: Vec<String> = (0..129).map(|i| format!("put k{i} v")).collect();
    let too_many = ctl.fails_with(&["txn", "-i"], &txn_input(&[], &many, &[]));
    assert!(
        too_many.contains("etcdserver: too many operations in txn request"),
        "{too_many}"
    );
    let twice = txn_input(&[], &["put a 1".into(), "put a 2".into()], &[]);
    let duplicate = ctl.fails_with(&["txn", "-i"], &twice);
    assert!(
        duplicate.contains("etcdserver: duplicate key given in txn request"),
        "{duplicate}"
    );
    let empty = ctl.fails_with(&["put", "", "x"], "");
    assert!(empty.contains("etcdserver: key is not provided"), "{empty}");
    let unknown_lease = ctl.fails_with(&["put", "leased", "x", "--lease=7b"], "");
    assert!(
        unknown_lease.contains("etcdserver: requested lease not found"),
        "{unknown_lease}"
    );
    // None of the refused writes changed anything.
    assert!(keys(&ctl.json(&["get", "a"])).is_empty());
    assert!(keys(&ctl.json(&["get", "k0"])).is_empty());
    assert!(keys(&ctl.json(&["get", "leased"])).is_empty());

    // A key put under a lease carries it; revoking the lease deletes the key.
    let granted = ctl.ok(&["lease", "grant", "100"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <hex id> granted");
    ctl.ok(&["put", "leased", "x", &format!("--lease={lease}")]);
    let leased = ctl.json(&["get", "leased"]);
    let lease_id = i64::from_str_radix(lease, 16).expect("a hex lease id");
    assert_eq!(leased["kvs"][0]["lease"], lease_id);
    ctl.ok(&["lease", "revoke", lease]);
    assert!(keys(&ctl.json(&["get", "leased"])).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_writes_through_a_follower() {
    let Some(bin) = etcdctl::binary() else { return };
    let mut cluster = LocalCluster::start(3, &[]);
    let (leader, follower) = cluster.wait_follower(WAIT).await;
    let ctl = Etcdctl {
        bin,
        endpoint: cluster.nodes[&follower].client_addr.clone(),
    };

    assert_eq!(ctl.ok(&["put", "k", "v1"]).trim(), "OK");
    let get = ctl.json(&["get", "k"]);
    assert_eq!(
        get["kvs"][0]["value"],
        b64("v1"),
        "a linearizable read on the follower"
    );
    assert_eq!(get["header"]["member_id"], follower);
    let txn = txn_input(
        &[r#"value("k") = "v1""#],
        &["put k v2".into(), "put k2 x".into()],
        &[],
    );
    assert!(ctl.ok_with(&["txn", "-i"], &txn).contains("SUCCESS"));
    assert_eq!(ctl.ok(&["del", "--prefix", "k"]).trim(), "2");
    ctl.ok(&["put", "k", "v3"]);
    // A serializable read on the follower catches up with the write (it was applied on a majority).
    let serializable = poll_until(WAIT, Duration::from_millis(50), async || {
        let v = ctl.json(&["get", "k", "--consistency=s"])["kvs"][0]["value"].clone();
        if v == b64("v3") { Ok(()) } else { Err(v) }
    })
    .await;
    serializable.expect("the follower applies the forwarded write");

    let members = ctl.json(&["member", "list"]);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
    let status = ctl.json(&["endpoint", "status"]);
    assert_eq!(status[0]["Status"]["leader"], leader);

    // A request already forwarded once is never forwarded again: a follower refuses it as etcd would.
    let mut raw = KvClient::connect(format!("http://{}", cluster.nodes[&follower].client_addr))
        .await
        .unwrap();
    let mut put = tonic::Request::new(PutRequest {
        key: b"k".to_vec(),
        value: b"chained".to_vec(),
        ..PutRequest::default()
    });
    put.metadata_mut()
        .insert("reinado-etcd-forwarded", "1".parse().unwrap());
    let refused = raw
        .put(put)
        .await
        .expect_err("a forwarded request on a follower");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(refused.message(), "etcdserver: not leader");
    assert_eq!(value_of(&ctl, "k"), b64("v3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_locks_and_elections_through_a_follower() {
    let Some(bin) = etcdctl::binary() else { return };
    let mut cluster = LocalCluster::start(3, &[]);
    let (_, follower) = cluster.wait_follower(WAIT).await;
    let ctl = Etcdctl {
        bin,
        endpoint: cluster.nodes[&follower].client_addr.clone(),
    };

    // Grant, attach, time-to-live with keys, keep-alive, list, revoke (which deletes the key).
    let id = granted(&ctl.ok(&["lease", "grant", "30"]));
    ctl.ok(&["put", "--lease", &id, "leased", "v"]);
    let ttl = ctl.json(&["lease", "timetolive", &id, "--keys"]);
    assert_eq!(ttl["granted-ttl"], 30, "{ttl}");
    let left = ttl["ttl"].as_i64().unwrap();
    assert!((1..=30).contains(&left), "{ttl}");
    assert_eq!(ttl["keys"][0], b64("leased"), "{ttl}");
    let kept = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    assert!(ctl.ok(&["lease", "list"]).contains(&id));
    assert!(ctl.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert!(keys(&ctl.json(&["get", "leased"])).is_empty());
    let unknown = ctl.fails_with(&["lease", "revoke", &id], "");
    assert!(unknown.contains("requested lease not found"), "{unknown}");
    let gone = ctl.json(&["lease", "timetolive", &id]);
    assert_eq!(gone["ttl"], -1, "{gone}");
    let auth = ctl.fails_with(&["user", "list"], "");
    assert!(auth.contains("Reinado has no users"), "{auth}");
    let too_large = ctl.fails_with(&["lease", "grant", "9000000001"], "");
    assert!(too_large.contains("too large lease TTL"), "{too_large}");

    // A lease that nobody keeps alive runs out on the leader's clock, and takes its key along.
    let started = Instant::now();
    let short = granted(&ctl.ok(&["lease", "grant", "1"]));
    ctl.ok(&["put", "--lease", &short, "expiring", "v"]);
    let expired = poll_until(WAIT, Duration::from_millis(20), async || {
        if keys(&ctl.json(&["get", "expiring"])).is_empty() {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    expired.expect("the key of a lease nobody keeps alive is deleted");
    let took = started.elapsed();
    // TTL 1 is the minimum (1 s with the default election timeout: one and a half of the longest, 500 ms,
    // rounded up), and runs from the grant.
    assert!(took >= Duration::from_secs(1), "expired after {took:?}");
    eprintln!("a 1 s lease ran out {took:?} after the grant was asked for");

    // Two contenders for one lock: the second gets it only once the first's process is killed and its
    // session lease runs out; its key's create revision (the fencing token) is larger.
    let first = Background::start(&ctl, &["lock", "--ttl=2", "shared"]);
    let first_key = first
        .line(WAIT)
        .expect("the first contender holds the lock");
    assert!(first_key.starts_with("shared/"), "{first_key}");
    let second = Background::start(&ctl, &["lock", "--ttl=2", "shared"]);
    assert_eq!(
        second.line(Duration::from_millis(1500)),
        None,
        "the second contender must wait"
    );
    let first_token = ctl.json(&["get", &first_key])["kvs"][0]["create_revision"]
        .as_i64()
        .unwrap();
    let killed = Instant::now();
    drop(first);
    let second_key = second
        .line(WAIT)
        .expect("the second contender gets the lock");
    eprintln!(
        "lock handed over {:?} after its holder was killed",
        killed.elapsed()
    );
    let second_token = ctl.json(&["get", &second_key])["kvs"][0]["create_revision"]
        .as_i64()
        .unwrap();
    assert!(
        second_token > first_token,
        "{second_token} after {first_token}"
    );
    assert!(keys(&ctl.json(&["get", &first_key])).is_empty());
    drop(second);

    // An election: one campaigner leads, an observer sees its proposal.
    let campaign = Background::start(&ctl, &["elect", "fleet", "alpha"]);
    let won = campaign.line(WAIT).expect("the campaigner is elected");
    assert!(won.starts_with("fleet/"), "{won}");
    let observer = Background::start(&ctl, &["elect", "--listen", "fleet"]);
    let seen: Vec<String> = (0..2).filter_map(|_| observer.line(WAIT)).collect();
    assert!(seen.iter().any(|l| l == "alpha"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_snapshot_and_a_whole_cluster_restart_and_still_run_out() {
    let Some(bin) = etcdctl::binary() else { return };
    let mut cluster = LocalCluster::start(3, &[("REINADO_SNAPSHOT_ENTRIES", "20")]);
    let (_, follower) = cluster.wait_follower(WAIT).await;
    let ctl = Etcdctl {
        bin,
        endpoint: cluster.nodes[&follower].client_addr.clone(),
    };
    let kept = granted(&ctl.ok(&["lease", "grant", "60"]));
    ctl.ok(&["put", "--lease", &kept, "kept", "v"]);
    let lapsing = granted(&ctl.ok(&["lease", "grant", "3"]));
    ctl.ok(&["put", "--lease", &lapsing, "lapsing", "v"]);
    // Past the snapshot interval: the leases are in the snapshot, not only in the log.
    for i in 0..30 {
        ctl.ok(&["put", &format!("filler/{i}"), "x"]);
    }
    for node in cluster.nodes.values_mut() {
        node.process.kill();
    }
    for node in cluster.nodes.values_mut() {
        node.process.start();
    }
    let (_, follower) = cluster.wait_follower(WAIT).await;
    let ctl = Etcdctl {
        bin: ctl.bin.clone(),
        endpoint: cluster.nodes[&follower].client_addr.clone(),
    };
    let ttl = ctl.json(&["lease", "timetolive", &kept, "--keys"]);
    assert_eq!(ttl["granted-ttl"], 60, "{ttl}");
    assert!(ttl["ttl"].as_i64().unwrap() > 0, "{ttl}");
    assert_eq!(ttl["keys"][0], b64("kept"), "{ttl}");
    // The lease nobody renews runs out on the new leader's clock (after its TTL plus an election timeout
    // from the moment that leader started its clock), and its key goes with it.
    let gone = poll_until(WAIT, Duration::from_millis(50), async || {
        if keys(&ctl.json(&["get", "lapsing"])).is_empty() {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    gone.expect("the unrenewed lease runs out after the restart");
    assert_eq!(keys(&ctl.json(&["get", "kept"])), [b64("kept")]);
}
