//! Lease commands (grant, revoke, keep-alive, ttl, list) and `put --lease`, over etcd's v3 API. Lease IDs are
//! printed and parsed in hex, as etcdctl does.

use super::LeaseCommand;
use super::output::{Out, text};
use reinado_client::etcd::{EtcdClient, lease_hex};
use reinado_proto::etcd::etcdserverpb::PutRequest;
use serde_json::json;

pub async fn run(etcd: &EtcdClient, out: &Out, command: LeaseCommand) -> u8 {
    match command {
        LeaseCommand::Grant { ttl } => grant(etcd, out, ttl).await,
        LeaseCommand::Revoke { id } => revoke(etcd, out, id).await,
        LeaseCommand::KeepAlive { id, once } => keep_alive(etcd, out, id, once).await,
        LeaseCommand::Ttl { id, keys } => ttl(etcd, out, id, keys).await,
        LeaseCommand::List => list(etcd, out).await,
    }
}

async fn grant(etcd: &EtcdClient, out: &Out, ttl: i64) -> u8 {
    match out.patiently(etcd.grant(ttl)).await {
        Ok(r) => {
            out.show(json!({ "id": lease_hex(r.id), "ttl": r.ttl }), || {
                format!("lease {} granted with TTL {}s", lease_hex(r.id), r.ttl)
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

async fn revoke(etcd: &EtcdClient, out: &Out, id: i64) -> u8 {
    match out.patiently(etcd.revoke(id)).await {
        Ok(_) => {
            out.show(json!({ "id": lease_hex(id), "revoked": true }), || {
                format!("lease {} revoked", lease_hex(id))
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

async fn keep_alive(etcd: &EtcdClient, out: &Out, id: i64, once: bool) -> u8 {
    let mut keep = etcd.keep_alive(id);
    loop {
        let renewal = tokio::select! {
            r = keep.next() => r,
            _ = reinado_client::shutdown_signal() => return 0,
        };
        match renewal {
            Ok(r) => out.show(json!({ "id": lease_hex(r.id), "ttl": r.ttl_s }), || {
                format!("lease {} renewed, TTL {}s", lease_hex(r.id), r.ttl_s)
            }),
            Err(e) => return out.error(&e),
        }
        if once {
            return 0;
        }
    }
}

async fn ttl(etcd: &EtcdClient, out: &Out, id: i64, keys: bool) -> u8 {
    let r = match out.patiently(etcd.time_to_live(id, keys)).await {
        Ok(r) => r,
        Err(e) => return out.error(&e),
    };
    let names: Vec<String> = r.keys.iter().map(|k| text(k)).collect();
    if r.ttl < 0 {
        let e = reinado_client::ClientError::NotFound(format!(
            "lease {} expired or does not exist",
            lease_hex(id)
        ));
        return out.error(&e);
    }
    let mut j = json!({ "id": lease_hex(id), "ttl": r.ttl, "granted_ttl": r.granted_ttl });
    if keys {
        j["keys"] = json!(names);
    }
    out.show(j, || {
        let mut s = format!(
            "lease {}: {}s left of {}s",
            lease_hex(id),
            r.ttl,
            r.granted_ttl
        );
        if keys {
            s.push_str(&format!(", keys [{}]", names.join(", ")));
        }
        s
    });
    0
}

async fn list(etcd: &EtcdClient, out: &Out) -> u8 {
    match out.patiently(etcd.leases()).await {
        Ok(r) => {
            let ids: Vec<String> = r.leases.iter().map(|l| lease_hex(l.id)).collect();
            out.show(json!({ "leases": ids }), || {
                let mut lines = vec![format!("{} leases", ids.len())];
                lines.extend(ids.iter().cloned());
                lines.join("\n")
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

/// `put KEY VALUE --lease ID`: etcd's KV.Put, which carries a lease (Reinado's own Put does not).
pub async fn put(etcd: &EtcdClient, out: &Out, key: &str, value: &str, lease: i64) -> u8 {
    let req = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        ..PutRequest::default()
    };
    match out.patiently(etcd.put(req)).await {
        Ok(r) => {
            let revision = r.header.map_or(0, |h| h.revision);
            out.show(
                json!({ "revision": revision, "lease": lease_hex(lease) }),
                || format!("OK (revision {revision}, lease {})", lease_hex(lease)),
            );
            0
        }
        Err(e) => out.error(&e),
    }
}
