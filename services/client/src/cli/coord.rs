//! Coordination commands over etcd's v3 API: `lock` (v3lockpb.Lock) and `elect` (v3electionpb.Election),
//! each under a session lease kept alive in the background and revoked on exit.

use super::output::{Out, text};
use reinado_client::etcd::{EtcdClient, Session, lease_hex};
use reinado_client::{ClientError, shutdown_signal};
use reinado_proto::etcd::etcdserverpb::RangeRequest;
use serde_json::json;
use std::process::ExitStatus;

/// Exit code after Ctrl-C or SIGTERM, as a shell reports SIGINT.
const INTERRUPTED: u8 = 130;
/// Exit code when the command could not be started, as a shell reports it.
const NOT_STARTED: u8 = 127;

/// How waiting for the lock or the leadership ended without it.
enum Waited<T> {
    Got(T),
    Failed(ClientError),
    Interrupted,
}

/// Waits for `fut` while the session's lease stays alive and no signal comes.
async fn wait_holding<T>(
    session: &mut Session,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Waited<T> {
    tokio::select! {
        r = fut => match r {
            Ok(v) => Waited::Got(v),
            Err(e) => Waited::Failed(e),
        },
        e = session.keep_alive.lost() => Waited::Failed(e),
        _ = shutdown_signal() => Waited::Interrupted,
    }
}

/// What to do once the lock is held.
pub enum Holding<U> {
    /// Run this command (program, arguments) and unlock when it exits.
    Run(Vec<String>),
    /// Hold until this completes (Ctrl-C, or Enter in the menu).
    Until(U),
}

/// `lock NAME [-- COMMAND...]`: takes the lock, prints its key and fencing token, runs COMMAND (or holds),
/// then unlocks and revokes the session.
pub async fn lock(
    etcd: &EtcdClient,
    out: &Out,
    name: &str,
    ttl_s: i64,
    then: Holding<impl Future<Output = ()>>,
) -> u8 {
    let mut session = match out.patiently(etcd.session(ttl_s)).await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let lease = session.lease;
    let key = match wait_holding(&mut session, etcd.lock(name.as_bytes(), lease)).await {
        Waited::Got(held) => held.key,
        Waited::Failed(e) => return release(etcd, out, session, out.error(&e)).await,
        Waited::Interrupted => return release(etcd, out, session, INTERRUPTED).await,
    };
    let token = match fencing_token(etcd, &key).await {
        Ok(t) => t,
        Err(e) => {
            let code = out.error(&e);
            let _ = etcd.unlock(&key).await;
            return release(etcd, out, session, code).await;
        }
    };
    out.show(
        json!({ "key": text(&key), "fencing_token": token, "lease": lease_hex(lease) }),
        || format!("locked {} (fencing token {token})", text(&key)),
    );
    let code = match then {
        Holding::Until(until) => hold(&mut session, out, until).await,
        Holding::Run(command) => run_holding(&mut session, out, &command).await,
    };
    if let Err(e) = etcd.unlock(&key).await {
        out.error(&e);
    }
    release(etcd, out, session, code).await
}

/// The lock key's create revision: it only grows from one holder to the next.
async fn fencing_token(etcd: &EtcdClient, key: &[u8]) -> Result<i64, ClientError> {
    let req = RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    };
    let r = etcd.range(req).await?;
    r.kvs
        .first()
        .map(|kv| kv.create_revision)
        .ok_or_else(|| ClientError::NotFound(format!("the lock key {} is gone", text(key))))
}

/// Holds until `until` completes (exit 0) or the lease is lost.
async fn hold(session: &mut Session, out: &Out, until: impl Future<Output = ()>) -> u8 {
    tokio::select! {
        _ = until => 0,
        e = session.keep_alive.lost() => out.error(&e),
    }
}

/// Runs `command` while the lock is held; its exit code, or the lease's loss (the command is then killed).
async fn run_holding(session: &mut Session, out: &Out, command: &[String]) -> u8 {
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let e = ClientError::Local(format!("cannot run `{}`: {e}", command[0]));
            out.error(&e);
            return NOT_STARTED;
        }
    };
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_code(s),
            Err(e) => out.error(&ClientError::Local(format!("waiting for `{}`: {e}", command[0]))),
        },
        _ = shutdown_signal() => {
            let _ = child.kill().await;
            INTERRUPTED
        }
        e = session.keep_alive.lost() => {
            let _ = child.kill().await;
            out.error(&e)
        }
    }
}

/// A child's exit status as a shell reports it (128 + the signal that killed it).
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    }
}

/// Ends the session (revoking its lease) and returns `code`, or the revoke's error code if `code` is 0.
async fn release(etcd: &EtcdClient, out: &Out, session: Session, code: u8) -> u8 {
    match etcd.close(session).await {
        Ok(()) => code,
        Err(e) if code == 0 => out.error(&e),
        Err(_) => code,
    }
}

/// The election to campaign in.
pub struct Candidacy<'a> {
    /// The election's name.
    pub name: &'a str,
    /// The candidate's proposal.
    pub proposal: &'a str,
    /// The session lease's TTL.
    pub ttl_s: i64,
}

/// `elect NAME PROPOSAL`: campaigns, prints when elected, holds until `until` completes (Ctrl-C), then
/// resigns.
pub async fn elect(
    etcd: &EtcdClient,
    out: &Out,
    c: Candidacy<'_>,
    until: impl Future<Output = ()>,
) -> u8 {
    let Candidacy {
        name,
        proposal,
        ttl_s,
    } = c;
    let mut session = match out.patiently(etcd.session(ttl_s)).await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let lease = session.lease;
    let campaign = etcd.campaign(name.as_bytes(), lease, proposal.as_bytes());
    let leader = match wait_holding(&mut session, campaign).await {
        Waited::Got(leader) => leader,
        Waited::Failed(e) => return release(etcd, out, session, out.error(&e)).await,
        Waited::Interrupted => return release(etcd, out, session, INTERRUPTED).await,
    };
    out.show(
        json!({
            "name": name, "key": text(&leader.key), "revision": leader.rev,
            "lease": lease_hex(lease), "proposal": proposal,
        }),
        || {
            format!(
                "elected: {name} leader is `{proposal}` (key {}, revision {})",
                text(&leader.key),
                leader.rev
            )
        },
    );
    let code = hold(&mut session, out, until).await;
    if let Err(e) = etcd.resign(leader).await {
        out.error(&e);
    }
    release(etcd, out, session, code).await
}

/// `elect NAME --listen`: prints each leader's proposal until Ctrl-C.
pub async fn listen(etcd: &EtcdClient, out: &Out, name: &str) -> u8 {
    let mut leaders = etcd.observe(name.as_bytes());
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        let next = tokio::select! {
            n = leaders.recv() => n,
            _ = shutdown_signal() => return 0,
        };
        let kv = match next {
            Some(Ok(r)) => r.kv.unwrap_or_default(),
            Some(Err(e)) => return out.error(&e),
            None => return 0,
        };
        // A stream reopened on another endpoint reports the current leader again.
        let seen = Some((kv.key.clone(), kv.mod_revision));
        if seen == last {
            continue;
        }
        last = seen;
        out.show(
            json!({ "key": text(&kv.key), "proposal": text(&kv.value), "revision": kv.create_revision }),
            || text(&kv.value),
        );
    }
}
