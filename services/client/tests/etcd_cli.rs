//! The `reinado` CLI's etcd commands (lease, put --lease, lock, elect, bench --api etcd) against the real
//! etcd 3.5.1 on loopback (`harness::etcd`), which serves Lease, Lock and Election: what the commands print
//! and exit with, that a lock is taken in turns, and that a resigned leader hands over.

use reinado_client::harness::etcd::LocalEtcd;
use reinado_client::harness::stdout_lines;
use reinado_proto::etcd::etcdserverpb::RangeRequest;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a command may take to print what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

fn reinado_cmd(etcd: &LocalEtcd, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reinado"));
    c.args(args)
        .env("REINADO_ENDPOINTS", etcd.addr())
        .env("REINADO_TIMEOUT_MS", "5000")
        .env_remove("REINADO_OUTPUT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    c
}

/// Runs `reinado ARGS` to the end.
fn reinado(etcd: &LocalEtcd, args: &[&str]) -> Output {
    reinado_cmd(etcd, args).output().expect("run reinado")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {:?}", stdout(o)))
}

/// A `reinado` running in the background, its stdout read line by line; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(etcd: &LocalEtcd, args: &[&str]) -> Running {
        let mut child = reinado_cmd(etcd, args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start reinado");
        let lines = stdout_lines(&mut child);
        Running { child, lines }
    }

    /// The next line that contains `what`, or a panic after `within`.
    fn line_with(&self, what: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {what:?} within {within:?}: {e}"),
            }
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) and returns the exit code, or panics if it does not exit in time.
    fn interrupt(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid}");
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for reinado") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("reinado did not exit within {WAIT:?} of SIGINT");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after "fencing token " in a line.
fn token(line: &str) -> i64 {
    let rest = line
        .split("fencing token ")
        .nth(1)
        .expect("a fencing token");
    rest.trim_end_matches(')').parse().expect("a number")
}

async fn key_exists(etcd: &LocalEtcd, key: &str) -> bool {
    let req = RangeRequest {
        key: key.into(),
        ..RangeRequest::default()
    };
    let r = etcd.kv().range(req).await.expect("range").into_inner();
    !r.kvs.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_ttl_keep_alive_list_revoke() {
    let etcd = LocalEtcd::start().await;
    let granted = reinado(&etcd, &["-o", "json", "lease", "grant", "30"]);
    assert!(granted.status.success(), "{granted:?}");
    let j = json(&granted);
    assert_eq!(j["ttl"], 30);
    let id = j["id"].as_str().expect("a hex id").to_string();
    assert_eq!(id.len(), 16, "{id}");

    let put = reinado(&etcd, &["put", "--lease", &id, "workers/a", "up"]);
    assert!(put.status.success(), "{put:?}");
    assert!(
        stdout(&put).starts_with("OK (revision "),
        "{}",
        stdout(&put)
    );
    assert!(key_exists(&etcd, "workers/a").await);

    let ttl = json(&reinado(
        &etcd,
        &["-o", "json", "lease", "ttl", &id, "--keys"],
    ));
    assert_eq!(ttl["granted_ttl"], 30);
    assert!(
        ttl["ttl"].as_i64().is_some_and(|t| t > 0 && t <= 30),
        "{ttl}"
    );
    assert_eq!(ttl["keys"], serde_json::json!(["workers/a"]));
    let human = stdout(&reinado(&etcd, &["lease", "ttl", &id, "--keys"]));
    assert!(human.contains("keys [workers/a]"), "{human}");

    let kept = reinado(&etcd, &["lease", "keep-alive", "--once", &id]);
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(stdout(&kept), format!("lease {id} renewed, TTL 30s\n"));

    let list = stdout(&reinado(&etcd, &["lease", "list"]));
    assert!(list.lines().any(|l| l == id), "{list}");

    let revoked = reinado(&etcd, &["lease", "revoke", &id]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(
        !key_exists(&etcd, "workers/a").await,
        "revoking deletes the lease's keys"
    );
    assert_eq!(
        reinado(&etcd, &["lease", "ttl", &id]).status.code(),
        Some(4)
    );
    assert_eq!(
        reinado(&etcd, &["lease", "revoke", &id]).status.code(),
        Some(4)
    );
    let gone = reinado(&etcd, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(gone.status.code(), Some(4), "{gone:?}");
    assert_eq!(
        reinado(&etcd, &["lease", "ttl", "not-hex"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_a_command_and_releases() {
    let etcd = LocalEtcd::start().await;
    let held = reinado(&etcd, &["lock", "jobs", "--", "sh", "-c", "echo held"]);
    assert!(held.status.success(), "{held:?}");
    let lines: Vec<String> = stdout(&held).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("locked jobs/") && token(&lines[0]) > 0,
        "{lines:?}"
    );
    assert_eq!(lines[1], "held");

    let j = json(&reinado(
        &etcd,
        &["-o", "json", "lock", "jobs", "--", "true"],
    ));
    assert!(
        j["fencing_token"].as_i64().unwrap() > token(&lines[0]),
        "{j}"
    );
    let failing = reinado(&etcd, &["lock", "jobs", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failing.status.code(), Some(3), "the command's exit code");

    let leases = json(&reinado(&etcd, &["-o", "json", "lease", "list"]));
    assert_eq!(
        leases["leases"],
        serde_json::json!([]),
        "every session lease was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lock_contenders_take_turns() {
    let etcd = LocalEtcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("turns");
    let log = log.to_str().unwrap();
    let first_cmd = format!("echo first-in >> {log}; sleep 1; echo first-out >> {log}");
    let first = Running::start(&etcd, &["lock", "jobs", "--", "sh", "-c", &first_cmd]);
    let first_token = token(&first.line_with("fencing token", WAIT));

    let second_cmd = format!("echo second-in >> {log}");
    let second = reinado(&etcd, &["lock", "jobs", "--", "sh", "-c", &second_cmd]);
    assert!(second.status.success(), "{second:?}");
    let second_token = token(stdout(&second).lines().next().unwrap());
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        "first-in\nfirst-out\nsecond-in\n",
        "the second got the lock only after the first exited"
    );
    assert!(second_token > first_token, "fencing tokens grow");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_hands_over_on_resign_and_listen_sees_each_leader() {
    let etcd = LocalEtcd::start().await;
    let mut one = Running::start(&etcd, &["elect", "el", "one"]);
    let elected = one.line_with("elected", WAIT);
    assert!(elected.contains("`one`"), "{elected}");
    let listen = Running::start(&etcd, &["elect", "el", "--listen"]);
    assert_eq!(listen.line_with("", WAIT), "one");

    let mut two = Running::start(&etcd, &["-o", "json", "elect", "el", "two"]);
    assert!(
        two.lines.recv_timeout(Duration::from_millis(700)).is_err(),
        "a second leader while the first leads"
    );
    assert_eq!(one.interrupt(), Some(0), "Ctrl-C resigns and exits 0");
    let j: serde_json::Value = serde_json::from_str(&two.line_with("proposal", WAIT)).unwrap();
    assert_eq!(
        (j["name"].as_str(), j["proposal"].as_str()),
        (Some("el"), Some("two"))
    );
    assert_eq!(listen.line_with("", WAIT), "two");
    assert_eq!(two.interrupt(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_over_etcd_prints_its_summary() {
    let etcd = LocalEtcd::start().await;
    let table = reinado(
        &etcd,
        &[
            "bench",
            "--api",
            "etcd",
            "--workload",
            "mixed",
            "--count",
            "200",
            "--keys",
            "20",
        ],
    );
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("WORKLOAD  CLIENTS  REQUESTS  ERRORS"),
        "{text}"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("mixed     1        200       0 "),
        "{text}"
    );

    for workload in ["put", "get", "txn"] {
        let args = [
            "-o",
            "json",
            "bench",
            "--api",
            "etcd",
            "--workload",
            workload,
            "--consistency",
            "serializable",
            "--clients",
            "2",
            "--count",
            "100",
            "--keys",
            "10",
        ];
        let j = json(&reinado(&etcd, &args));
        assert_eq!(
            (j["requests"].as_u64(), j["errors"].as_u64()),
            (Some(100), Some(0)),
            "{j}"
        );
        assert_eq!(
            (j["api"].as_str(), j["workload"].as_str()),
            (Some("etcd"), Some(workload))
        );
    }
}
