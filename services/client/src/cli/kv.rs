//! Key-value commands: put, get, del, range, cas, watch, log.

use super::ConsistencyArg;
use super::output::{NOT_SWAPPED, Out, table, text};
use reinado_client::watch::WatchItem;
use reinado_client::{Client, ClientError};
use reinado_proto::v1::{EventType, KeyValue, LogEntryResponse, RangeRequest, log_operation};
use serde_json::{Value, json};
use std::time::Duration;

fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": text(&kv.key),
        "value": text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    })
}

pub async fn put(client: &Client, out: &Out, key: &str, value: &str) -> u8 {
    match out
        .patiently(client.put(key.as_bytes(), value.as_bytes()))
        .await
    {
        Ok(r) => {
            out.show(json!({ "revision": r.revision }), || {
                format!("OK (revision {})", r.revision)
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

pub async fn get(client: &Client, out: &Out, key: &str, consistency: ConsistencyArg) -> u8 {
    match out
        .patiently(client.get(key.as_bytes(), consistency.into()))
        .await
    {
        Ok(r) => match r.kv {
            Some(kv) => {
                out.show(kv_json(&kv), || text(&kv.value));
                0
            }
            None => out.error(&ClientError::NotFound(format!("key `{key}` not found"))),
        },
        Err(e) => out.error(&e),
    }
}

pub async fn del(client: &Client, out: &Out, key: &str) -> u8 {
    match out.patiently(client.delete(key.as_bytes())).await {
        Ok(r) => {
            out.show(
                json!({ "deleted": r.deleted, "revision": r.revision }),
                || {
                    if r.deleted {
                        format!("deleted (revision {})", r.revision)
                    } else {
                        format!("`{key}` did not exist")
                    }
                },
            );
            0
        }
        Err(e) => out.error(&e),
    }
}

/// What to list.
pub struct RangeArgs {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: u32,
    pub keys_only: bool,
    pub consistency: ConsistencyArg,
}

pub async fn range(client: &Client, out: &Out, q: RangeArgs) -> u8 {
    let req = RangeRequest {
        prefix: q.prefix.unwrap_or_default().into_bytes(),
        start: q.start.unwrap_or_default().into_bytes(),
        end: q.end.unwrap_or_default().into_bytes(),
        limit: q.limit,
        keys_only: q.keys_only,
        consistency: reinado_proto::v1::Consistency::from(q.consistency) as i32,
    };
    match out.patiently(client.range(req)).await {
        Ok(r) => {
            let kvs: Vec<Value> = r.kvs.iter().map(kv_json).collect();
            out.show(json!({ "kvs": kvs, "more": r.more }), || {
                let rows: Vec<Vec<String>> = r
                    .kvs
                    .iter()
                    .map(|kv| vec![text(&kv.key), text(&kv.value), kv.mod_revision.to_string()])
                    .collect();
                let mut s = if q.keys_only {
                    rows.iter()
                        .map(|r| r[0].clone())
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    table(&["KEY", "VALUE", "REVISION"], &rows)
                };
                if r.more {
                    s.push_str("\n(more keys match: raise --limit)");
                }
                s
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

pub async fn cas(client: &Client, out: &Out, key: &str, expect: Option<&str>, new: &str) -> u8 {
    let expected = expect.map(str::as_bytes);
    match out
        .patiently(client.cas(key.as_bytes(), expected, new.as_bytes()))
        .await
    {
        Ok(r) => {
            out.show(
                json!({ "swapped": r.succeeded, "revision": r.revision }),
                || {
                    if r.succeeded {
                        format!("swapped (revision {})", r.revision)
                    } else {
                        "not swapped: the current value is not the expected one".to_string()
                    }
                },
            );
            if r.succeeded { 0 } else { NOT_SWAPPED }
        }
        Err(e) => out.error(&e),
    }
}

pub async fn watch(
    client: &Client,
    out: &Out,
    key: String,
    prefix: bool,
    from: u64,
    count: u64,
    seconds: u64,
) -> u8 {
    let mut rx = client.watch(key.into_bytes(), prefix, from);
    let deadline =
        (seconds > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let mut seen = 0u64;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(item) => item,
                Err(_) => return 0,
            },
            None => rx.recv().await,
        };
        let Some(item) = next else { return 0 };
        match item {
            Ok(WatchItem::Started { start_revision }) => {
                if !out.is_json() {
                    eprintln!("watching from revision {start_revision} (Ctrl-C to stop)");
                }
            }
            Ok(WatchItem::Resumed {
                endpoint,
                from_revision,
            }) => {
                if !out.is_json() {
                    eprintln!("(moved to {endpoint}, resuming at revision {from_revision})");
                }
            }
            Ok(WatchItem::Events(events)) => {
                for e in events {
                    let kind = if e.r#type == EventType::Delete as i32 {
                        "DELETE"
                    } else {
                        "PUT"
                    };
                    let kv = e.kv.unwrap_or_default();
                    let mut j = kv_json(&kv);
                    j["type"] = json!(kind);
                    out.show(j, || {
                        format!(
                            "{:>8}  {kind:<6}  {} = {}",
                            kv.mod_revision,
                            text(&kv.key),
                            text(&kv.value)
                        )
                    });
                    seen += 1;
                    if count > 0 && seen >= count {
                        return 0;
                    }
                }
            }
            Err(e) => return out.error(&e),
        }
    }
}

fn describe(entry: &LogEntryResponse) -> (Value, String) {
    use reinado_proto::v1::command::Op;
    let op = entry.operation.as_ref().and_then(|o| o.kind.as_ref());
    let (j, s) = match op {
        Some(log_operation::Kind::Noop(_)) | None => (
            json!({"noop": true}),
            "no-op (a new leader's first entry)".to_string(),
        ),
        Some(log_operation::Kind::MemberChange(m)) => {
            let kind = reinado_proto::v1::MemberChangeKind::try_from(m.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("UNKNOWN");
            let addr = m
                .context
                .as_ref()
                .map(|c| c.peer_addr.clone())
                .unwrap_or_default();
            (
                json!({"member_change": kind, "id": m.id, "peer_addr": addr}),
                format!("membership: {kind} node {} {addr}", m.id),
            )
        }
        Some(log_operation::Kind::Command(c)) => {
            let id = c
                .request_id
                .map(|i| format!(" (client {:x} request {})", i.client_id, i.seq))
                .unwrap_or_default();
            match &c.op {
                Some(Op::Put(p)) => (
                    json!({"put": {"key": text(&p.key), "value": text(&p.value)}}),
                    format!("put {} = {}{id}", text(&p.key), text(&p.value)),
                ),
                Some(Op::Delete(d)) => (
                    json!({"delete": {"key": text(&d.key)}}),
                    format!("delete {}{id}", text(&d.key)),
                ),
                Some(Op::Txn(t)) => (
                    json!({"txn": {"compares": t.compare.len(), "success": t.success.len(), "failure": t.failure.len()}}),
                    format!(
                        "txn: {} comparisons, {} then-operations, {} else-operations{id}",
                        t.compare.len(),
                        t.success.len(),
                        t.failure.len()
                    ),
                ),
                Some(Op::MembersStarted(m)) => (
                    json!({"members_started": m.ids}),
                    format!("members recorded as started: {:?}", m.ids),
                ),
                Some(Op::SetLimits(l)) => (
                    json!({"set_limits": {
                        "quota_bytes": l.quota_bytes,
                        "session_ttl_ms": l.session_ttl_ms,
                        "max_sessions": l.max_sessions,
                        "max_results_per_session": l.max_results_per_session,
                        "history_bytes": l.history_bytes,
                    }}),
                    format!(
                        "limits agreed: quota {} bytes, session TTL {} ms, {} sessions, {} results per session, \
                         {} bytes of watch history",
                        l.quota_bytes,
                        l.session_ttl_ms,
                        l.max_sessions,
                        l.max_results_per_session,
                        l.history_bytes
                    ),
                ),
                Some(Op::LeaseGrant(g)) => (
                    json!({"lease_grant": {"id": g.id, "ttl_s": g.ttl_s}}),
                    format!("lease grant {:x} TTL {}s{id}", g.id, g.ttl_s),
                ),
                Some(Op::LeaseRevoke(r)) => (
                    json!({"lease_revoke": {"ids": r.ids, "expired": r.expired}}),
                    format!(
                        "lease {} {:x?}{id}",
                        if r.expired { "expiry" } else { "revoke" },
                        r.ids
                    ),
                ),
                Some(Op::EtcdTxn(t)) => (
                    json!({"etcd_txn": {"compares": t.compare.len(), "success": t.success.len(), "failure": t.failure.len()}}),
                    format!(
                        "etcd txn: {} comparisons, {} then-operations, {} else-operations{id}",
                        t.compare.len(),
                        t.success.len(),
                        t.failure.len()
                    ),
                ),
                Some(Op::Compact(c)) => (
                    json!({"compact": {"revision": c.revision}}),
                    format!("compact history up to revision {}{id}", c.revision),
                ),
                None => (json!({"command": null}), "empty command".to_string()),
            }
        }
    };
    (j, s)
}

pub async fn log(client: &Client, out: &Out, index: u64) -> u8 {
    match out.patiently(client.log_entry(index)).await {
        Ok(entry) => {
            let (op, line) = describe(&entry);
            out.show(
                json!({"index": entry.index, "term": entry.term, "operation": op}),
                || format!("index {}  term {}  {line}", entry.index, entry.term),
            );
            0
        }
        Err(e) => out.error(&e),
    }
}
