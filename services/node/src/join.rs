//! Joining a running cluster (`REINADO_JOIN`): a new node with an empty data dir starts its servers, then
//! asks a member or a proxy to add it. A follower answers with the leader's address, so the request is
//! re-sent there; a proxy forwards it itself. Once the leader commits the node as a learner it replicates its
//! log (or a snapshot) to it, and promotes it to voter when it has caught up.

use reinado_client::channel::{ChannelOptions, lazy_channel};
use reinado_proto::v1::AddMemberRequest;
use reinado_proto::v1::cluster_client::ClusterClient;
use reinado_raft::NodeId;
use std::time::Duration;
use tracing::{info, warn};

/// Who is joining.
#[derive(Clone, Debug)]
pub struct Joiner {
    /// The cluster it expects to join.
    pub cluster_id: String,
    /// Its id.
    pub id: NodeId,
    /// Where peers reach it.
    pub peer_addr: String,
    /// Where clients reach it.
    pub client_addr: String,
}

/// Asks `target` (then the leader it names) to add this node, until one accepts. Fails only for answers that
/// retrying cannot change: another cluster, or the id taken by a member at another address.
pub async fn join(target: String, me: Joiner) -> anyhow::Result<()> {
    let mut addr = target.clone();
    let mut delay = Duration::from_millis(100);
    loop {
        match add_self(&addr, &me).await {
            Ok(cluster_id) if !cluster_id.is_empty() && cluster_id != me.cluster_id => {
                anyhow::bail!(
                    "{addr} belongs to cluster `{cluster_id}`, not `{}` (REINADO_CLUSTER_ID)",
                    me.cluster_id
                );
            }
            Ok(_) => {
                info!(through = %addr, "joined the cluster as a learner");
                return Ok(());
            }
            Err(status) => {
                let leader = status
                    .metadata()
                    .get(crate::error::LEADER_ADDR)
                    .and_then(|v| v.to_str().ok())
                    .filter(|a| !a.is_empty())
                    .map(str::to_string);
                if let Some(leader) = leader {
                    addr = leader;
                    continue;
                }
                let redirect = status.metadata().contains_key(crate::error::LEADER_ID);
                if !redirect
                    && matches!(
                        status.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
                    )
                {
                    anyhow::bail!("joining through {addr} failed: {}", status.message());
                }
                warn!(through = %addr, "cannot join yet: {}; retrying", status.message());
                addr = target.clone();
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn add_self(addr: &str, me: &Joiner) -> Result<String, tonic::Status> {
    let channel = lazy_channel(addr, ChannelOptions::default())
        .map_err(|e| tonic::Status::invalid_argument(format!("bad address {addr}: {e}")))?;
    let mut client = ClusterClient::new(channel);
    let mut req = tonic::Request::new(AddMemberRequest {
        id: me.id,
        peer_addr: me.peer_addr.clone(),
        client_addr: me.client_addr.clone(),
        learner: false,
    });
    req.set_timeout(Duration::from_secs(10));
    let resp = client.add_member(req).await?;
    Ok(resp.into_inner().cluster_id)
}
