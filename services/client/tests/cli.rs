//! The `reinado` CLI against a real three-node cluster behind a proxy: `status`, `get` and errors in human
//! and JSON form with meaningful exit codes, and the interactive menu driven through a pseudo-terminal.

use reinado_client::harness::LocalCluster;
use std::process::{Command, Output};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn reinado(endpoints: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reinado"))
        .args(["--endpoints", endpoints])
        .args(args)
        .env_remove("REINADO_ENDPOINTS")
        .env_remove("REINADO_OUTPUT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run reinado")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn cluster() -> (LocalCluster, u64, String) {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(WAIT).await;
    let proxy = cluster.add_proxy(&[]).addr.clone();
    for _ in 0..200 {
        if reinado_client::health::check(&proxy, "", Duration::from_secs(1))
            .await
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (cluster, leader, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_get_and_errors_in_both_forms() {
    let (mut cluster, leader, proxy) = cluster().await;

    let put = reinado(&proxy, &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(
        stdout(&put).starts_with("OK (revision "),
        "{}",
        stdout(&put)
    );

    let get = reinado(&proxy, &["get", "greeting"]);
    assert_eq!(get.status.code(), Some(0));
    assert_eq!(stdout(&get), "hello\n");
    let get = reinado(
        &proxy,
        &[
            "-o",
            "json",
            "get",
            "greeting",
            "--consistency",
            "serializable",
        ],
    );
    let j: serde_json::Value = serde_json::from_str(&stdout(&get)).unwrap();
    assert_eq!(j["value"], "hello");
    assert_eq!(j["version"], 1);

    let missing = reinado(&proxy, &["get", "nope"]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(stderr(&missing).contains("key `nope` not found"));
    let missing = reinado(&proxy, &["-o", "json", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(4));
    let j: serde_json::Value = serde_json::from_str(&stdout(&missing)).unwrap();
    assert_eq!(j["exit_code"], 4);

    let invalid = reinado(&proxy, &["put", "", "x"]);
    assert_eq!(invalid.status.code(), Some(5));
    assert!(
        stderr(&invalid).contains("invalid request: key must not be empty"),
        "{}",
        stderr(&invalid)
    );

    let down = reinado("127.0.0.1:1", &["--timeout-ms", "500", "get", "x"]);
    assert_eq!(down.status.code(), Some(3));
    assert!(
        stderr(&down).contains("cannot reach 127.0.0.1:1"),
        "{}",
        stderr(&down)
    );
    assert!(
        stderr(&down).contains("make up"),
        "says what to do: {}",
        stderr(&down)
    );

    let status = reinado(&proxy, &["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    assert!(text.contains(&format!("leader {leader}")), "{text}");
    let header = text.lines().nth(1).unwrap();
    for col in [
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "HEALTH",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert_eq!(text.matches("serving").count(), 3, "{text}");
    assert_eq!(
        text.matches("leader").count(),
        2,
        "one in the title, one in the table: {text}"
    );
    let status = reinado(&proxy, &["-o", "json", "status"]);
    let j: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(j["leader"], leader);
    let members = j["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["health"], "serving");
        let addr = m["client_addr"].as_str().unwrap();
        assert!(
            cluster.nodes.values().any(|n| n.client_addr == addr),
            "{addr}"
        );
    }
    assert_eq!(members.iter().filter(|m| m["role"] == "leader").count(), 1);

    let cas = reinado(&proxy, &["cas", "greeting", "bye", "--expect", "nope"]);
    assert_eq!(cas.status.code(), Some(7));
    let cas = reinado(&proxy, &["cas", "greeting", "bye", "--expect", "hello"]);
    assert_eq!(cas.status.code(), Some(0));

    // `health` exits 0 for a serving process and 8 (not 7, the compare-and-swap's) for one that answers but
    // is not serving: a proxy that reaches no node.
    let health = reinado(&proxy, &["health", &proxy]);
    assert_eq!(health.status.code(), Some(0), "{}", stderr(&health));
    for id in 1..=3 {
        cluster.node(id).process.kill();
    }
    for _ in 0..200 {
        if !reinado_client::health::check(&proxy, "", Duration::from_secs(1))
            .await
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = reinado(&proxy, &["health", &proxy]);
    assert_eq!(health.status.code(), Some(8), "{}", stdout(&health));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_menu_writes_a_value_and_reads_it_back() {
    let (_cluster, _, proxy) = cluster().await;
    let proxy2 = proxy.clone();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reinado"));
        cmd.args(["--endpoints", &proxy2, "menu"]);
        cmd.env_remove("REINADO_ENDPOINTS");
        let mut p = rexpect::session::spawn_command(cmd, Some(15_000)).unwrap();
        p.exp_string("1) write a key").unwrap();
        p.exp_string("choose: ").unwrap();
        p.send_line("1").unwrap();
        p.exp_string("key: ").unwrap();
        p.send_line("from-the-menu").unwrap();
        p.exp_string("value: ").unwrap();
        p.send_line("it works").unwrap();
        p.exp_string("OK (revision").unwrap();
        p.exp_string("choose: ").unwrap();
        p.send_line("2").unwrap();
        p.exp_string("key: ").unwrap();
        p.send_line("from-the-menu").unwrap();
        p.exp_string("from-the-menu = it works").unwrap();
        p.exp_string("choose: ").unwrap();
        p.send_line("0").unwrap();
        p.exp_eof().unwrap();
    })
    .await
    .unwrap();
    let get = reinado(&proxy, &["get", "from-the-menu"]);
    assert_eq!(stdout(&get), "it works\n");
}
