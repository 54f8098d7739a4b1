//! Cluster commands: status, member, leader transfer, fault, health.

use super::output::{NOT_SERVING, Out, table};
use super::{FaultCommand, MemberCommand};
use reinado_client::{Client, ClientError};
use reinado_proto::v1::{
    AddMemberRequest, CrashRequest, HealRequest, IsolateRequest, Member, Role, StatusResponse,
    StepDownRequest,
};
use serde_json::{Value, json};
use std::time::Duration;

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unspecified) {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
        Role::Learner => "learner",
        Role::None => "not a member",
        Role::Unspecified => "unknown",
    }
}

/// One row of `reinado status`: the member as the leader sees it, and as it sees itself.
struct Row {
    member: Member,
    own: Result<StatusResponse, ClientError>,
}

impl Row {
    fn json(&self) -> Value {
        let m = &self.member;
        let mut j = json!({
            "id": m.id,
            "client_addr": m.client_addr,
            "peer_addr": m.peer_addr,
            "voter": m.voter,
            "match_index": m.match_index,
            "lag": m.lag,
        });
        match &self.own {
            Ok(s) => {
                j["role"] = json!(role_name(s.role));
                j["term"] = json!(s.term);
                j["commit"] = json!(s.commit);
                j["applied"] = json!(s.applied);
                j["health"] = json!(if s.serving { "serving" } else { "not serving" });
            }
            Err(e) => {
                j["health"] = json!("unreachable");
                j["error"] = json!(e.to_string());
            }
        }
        j
    }

    fn cells(&self) -> Vec<String> {
        let m = &self.member;
        let (role, term, commit, applied, health) = match &self.own {
            Ok(s) => (
                role_name(s.role).to_string(),
                s.term.to_string(),
                s.commit.to_string(),
                s.applied.to_string(),
                if s.serving { "serving" } else { "not serving" }.to_string(),
            ),
            Err(_) => (
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "unreachable".into(),
            ),
        };
        vec![
            m.id.to_string(),
            if m.client_addr.is_empty() {
                m.peer_addr.clone()
            } else {
                m.client_addr.clone()
            },
            role,
            term,
            commit,
            applied,
            m.lag.to_string(),
            health,
        ]
    }
}

pub async fn status(client: &Client, out: &Out) -> u8 {
    let overview = match out.patiently(client.status()).await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in overview.members.iter().cloned().enumerate() {
        let client = client.clone();
        tasks.spawn(async move {
            let own = if m.client_addr.is_empty() {
                Err(ClientError::Local("client address not known yet".into()))
            } else {
                client.status_of(&m.client_addr).await
            };
            (i, Row { member: m, own })
        });
    }
    let mut rows: Vec<(usize, Row)> = tasks.join_all().await;
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
    let leader = overview.leader_id;
    let j = json!({
        "cluster_id": overview.cluster_id,
        "leader": leader,
        "term": overview.term,
        "members": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    out.show(j, || {
        let head = if leader == 0 {
            format!(
                "cluster {}: no leader (an election is running)",
                overview.cluster_id
            )
        } else {
            format!(
                "cluster {}: leader {leader}, term {}",
                overview.cluster_id, overview.term
            )
        };
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        let t = table(
            &[
                "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "HEALTH",
            ],
            &cells,
        );
        format!("{head}\n{t}")
    });
    if rows.iter().all(|r| r.own.is_err()) {
        3
    } else {
        0
    }
}

fn members_out(out: &Out, members: &[Member]) {
    let j: Vec<Value> = members
        .iter()
        .map(|m| json!({"id": m.id, "peer_addr": m.peer_addr, "client_addr": m.client_addr, "voter": m.voter}))
        .collect();
    out.show(json!({ "members": j }), || {
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    if m.voter { "voter" } else { "learner" }.to_string(),
                    m.peer_addr.clone(),
                    m.client_addr.clone(),
                ]
            })
            .collect();
        table(&["ID", "KIND", "PEER ADDRESS", "CLIENT ADDRESS"], &rows)
    });
}

pub async fn member(client: &Client, out: &Out, cmd: MemberCommand) -> u8 {
    let result = match cmd {
        MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
        } => {
            let req = AddMemberRequest {
                id,
                peer_addr,
                client_addr,
                learner,
            };
            out.patiently(client.add_member(req))
                .await
                .map(|r| r.members)
        }
        MemberCommand::Remove { id } => out
            .patiently(client.remove_member(id))
            .await
            .map(|r| r.members),
        MemberCommand::List => out.patiently(client.status()).await.map(|r| r.members),
    };
    match result {
        Ok(members) => {
            members_out(out, &members);
            0
        }
        Err(e) => out.error(&e),
    }
}

pub async fn transfer(client: &Client, out: &Out, target: u64) -> u8 {
    match out.patiently(client.transfer_leader(target)).await {
        Ok(r) => {
            out.show(json!({ "leader": r.leader_id }), || {
                format!("node {} leads now", r.leader_id)
            });
            0
        }
        Err(e) => out.error(&e),
    }
}

pub async fn fault(client: &Client, out: &Out, node: &str, fault: FaultCommand) -> u8 {
    let mut api = match client.fault(node) {
        Ok(api) => api,
        Err(e) => return out.error(&e),
    };
    let result = match fault {
        FaultCommand::StepDown => api.step_down(StepDownRequest {}).await,
        FaultCommand::Isolate { peers, duration_ms } => {
            api.isolate(IsolateRequest { peers, duration_ms }).await
        }
        FaultCommand::Heal => api.heal(HealRequest {}).await,
        FaultCommand::Crash => api.crash(CrashRequest {}).await,
    };
    match result {
        Ok(r) => {
            let message = r.into_inner().message;
            out.show(json!({ "message": message }), || message.clone());
            0
        }
        Err(status) => out.error(&ClientError::from_status(&status)),
    }
}

pub async fn health(out: &Out, addr: &str, ready: bool) -> u8 {
    let service = if ready { "reinado.v1.Kv" } else { "" };
    match reinado_client::health::check(addr, service, Duration::from_secs(3)).await {
        Ok(serving) => {
            out.show(json!({ "addr": addr, "serving": serving }), || {
                format!(
                    "{addr}: {}",
                    if serving { "serving" } else { "not serving" }
                )
            });
            if serving { 0 } else { NOT_SERVING }
        }
        Err(e) => out.error(&ClientError::Unavailable {
            what: format!("{addr}: {e}"),
        }),
    }
}
