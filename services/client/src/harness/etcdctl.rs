//! The real `etcdctl` (3.5, from `make etcd-bin`, in the workspace's `target/etcd/bin`) pointed at a node or
//! a proxy: commands run to completion under a deadline, background commands (watch, lock, elect) whose
//! stdout lines (or watch events) are collected and which are killed when dropped, and helpers for
//! etcdctl's JSON output. The node's and the proxy's etcdctl tests share it.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest one etcdctl command may run before it is killed and the test fails.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// `target/etcd/bin/etcdctl`, or `None` (saying why) if `make etcd-bin` has not put it there.
pub fn binary() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/etcd/bin/etcdctl");
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "SKIPPED: {} is missing; run `make etcd-bin` to fetch etcd 3.5's etcdctl",
        path.display()
    );
    None
}

/// etcdctl pointed at one endpoint.
#[derive(Clone, Debug)]
pub struct Etcdctl {
    /// The etcdctl binary.
    pub bin: PathBuf,
    /// The endpoint (`host:port`).
    pub endpoint: String,
}

impl Etcdctl {
    /// The command for `args`, with the v3 API, the endpoint and short dial and command timeouts.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--dial-timeout=5s", "--command-timeout=15s"])
            .args(args);
        cmd
    }

    /// Starts etcdctl with `args`, its stdout piped.
    fn spawn(&self, args: &[&str], stdin: Stdio, stderr: Stdio) -> Child {
        self.command(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start etcdctl")
    }

    /// Runs etcdctl with `stdin` to completion (killing it past [`COMMAND_DEADLINE`]).
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.spawn(args, Stdio::piped(), Stdio::piped());
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write etcdctl's stdin");
        let deadline = Instant::now() + COMMAND_DEADLINE;
        while child.try_wait().expect("etcdctl's status").is_none() {
            if Instant::now() > deadline {
                child.kill().expect("kill etcdctl");
                panic!("etcdctl {args:?} ran over {COMMAND_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("etcdctl's output")
    }

    /// The stdout of a command that must succeed.
    pub fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The stdout of a command without input that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "")
    }

    /// The JSON output (`-w json`) of a command that must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl {args:?}: `{out}`: {e}"))
    }

    /// The stderr of a command that must fail.
    pub fn fails_with(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The revision the endpoint is at, from a Range's header.
    pub fn revision(&self) -> i64 {
        self.json(&["get", "no-such-key"])["header"]["revision"]
            .as_i64()
            .expect("a header revision")
    }
}

/// Base64, as etcdctl's JSON prints keys and values.
pub fn b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The keys of a `get -w json` answer, as printed (base64).
pub fn keys(get: &Value) -> Vec<String> {
    get["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| kv["key"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The lease id in etcdctl's "lease 694d7b5b7d6a0f05 granted with TTL(5s)".
pub fn granted(out: &str) -> String {
    assert!(out.contains("granted with TTL"), "{out}");
    out.split_whitespace().nth(1).expect("lease ID").to_string()
}

/// A background etcdctl (watch, lock, elect), its stdout lines collected, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    /// Starts etcdctl with `args` in the background.
    pub fn start(ctl: &Etcdctl, args: &[&str]) -> Background {
        let mut child = ctl.spawn(args, Stdio::null(), Stdio::null());
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// The next line printed within `wait`.
    pub fn line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// The next `n` events a `watch -w json` prints, within `wait`.
    pub fn events(&self, n: usize, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        while events.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left).unwrap_or_else(|| {
                panic!("the watch printed {events:?}, not {n} events, in {wait:?}")
            });
            let resp: Value = serde_json::from_str(&line).expect("a JSON watch response");
            events.extend(resp["Events"].as_array().cloned().unwrap_or_default());
        }
        events
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(b64("foo"), "Zm9v");
        assert_eq!(b64("w1"), "dzE=");
        assert_eq!(b64("f"), "Zg==");
        assert_eq!(b64("foobar"), "Zm9vYmFy");
    }
}
