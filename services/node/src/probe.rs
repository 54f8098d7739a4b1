//! Before an empty data dir writes the bootstrap log, it asks the other bootstrap members whether its id took
//! part in the cluster (`RaftPeer.Probe`): a new cluster bootstraps, a lost disk is refused (see
//! `replica/started.rs` for the rule and why).

use crate::replica::{self, BootstrapDecision, ProbeAnswer};
use crate::transport::Identity;
use reinado_client::channel::{ChannelOptions, lazy_channel};
use reinado_proto::raft::v1::ProbeRequest;
use reinado_proto::raft::v1::raft_peer_client::RaftPeerClient;
use reinado_raft::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// How long one probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between two rounds of probes.
const ROUND: Duration = Duration::from_millis(500);
/// Waiting is logged once every this many rounds.
const LOG_EVERY: u32 = 10;

/// What an empty data dir of a bootstrap member does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The cluster is new: write the bootstrap log.
    Bootstrap,
    /// The cluster runs: join it through this client address.
    Join(String),
}

/// Probes the other bootstrap `members` until the answers decide; fails if this node's disk was lost.
/// Waits (logging why) while too few members answer.
pub async fn empty_data_dir(
    me: &Identity,
    members: &BTreeMap<NodeId, String>,
    bugs: replica::Bugs,
) -> anyhow::Result<Verdict> {
    let ids: Vec<NodeId> = members.keys().copied().collect();
    let mut round = 0u32;
    loop {
        let answers = probe_all(me, members).await;
        let flags = answers.iter().map(|(&id, (a, _))| (id, *a)).collect();
        match replica::bootstrap_decision(me.id, &ids, &flags, bugs) {
            BootstrapDecision::Bootstrap => {
                info!(
                    answers = answers.len(),
                    "empty data dir of a new cluster: bootstrapping"
                );
                return Ok(Verdict::Bootstrap);
            }
            BootstrapDecision::Join(through) => {
                let addr = answers[&through].1.clone();
                info!(through = %addr, "empty data dir, and the cluster runs: joining it");
                return Ok(Verdict::Join(addr));
            }
            BootstrapDecision::Refuse(why) => anyhow::bail!(why),
            BootstrapDecision::Wait(why) => {
                if round.is_multiple_of(LOG_EVERY) {
                    info!("empty data dir: waiting before bootstrapping: {why}");
                }
            }
        }
        round += 1;
        tokio::time::sleep(ROUND).await;
    }
}

/// One round: every other member asked at once; those that did not answer in time are absent.
async fn probe_all(
    me: &Identity,
    members: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, (ProbeAnswer, String)> {
    let mut probes = JoinSet::new();
    for (&id, addr) in members.iter().filter(|&(&id, _)| id != me.id) {
        let (addr, req) = (
            addr.clone(),
            ProbeRequest {
                cluster_id: me.cluster_id.clone(),
                id: me.id,
            },
        );
        probes.spawn(async move { (id, probe(&addr, req).await) });
    }
    let mut answers = BTreeMap::new();
    while let Some(done) = probes.join_next().await {
        match done {
            Ok((id, Ok(answer))) => {
                answers.insert(id, answer);
            }
            Ok((id, Err(e))) => tracing::debug!(peer = id, "probe unanswered: {e}"),
            Err(e) => warn!("probe task failed: {e}"),
        }
    }
    answers
}

/// One member's answer, with the address it serves clients on.
async fn probe(addr: &str, req: ProbeRequest) -> anyhow::Result<(ProbeAnswer, String)> {
    let channel = lazy_channel(addr, ChannelOptions::default())?;
    let mut client = RaftPeerClient::new(channel);
    let cluster_id = req.cluster_id.clone();
    let mut req = tonic::Request::new(req);
    req.set_timeout(PROBE_TIMEOUT);
    let resp = tokio::time::timeout(PROBE_TIMEOUT, client.probe(req))
        .await??
        .into_inner();
    anyhow::ensure!(
        resp.cluster_id == cluster_id,
        "{addr} belongs to cluster `{}`",
        resp.cluster_id
    );
    let answer = ProbeAnswer {
        fresh: resp.fresh,
        started: resp.started,
    };
    Ok((answer, resp.client_addr))
}
