//! etcd's Cluster service: the members as etcd describes them, and adding and removing them through
//! Reinado's own membership changes.
//!
//! etcd picks a new member's id itself; Reinado's nodes are started with theirs (REINADO_NODE_ID), so
//! MemberAdd gives the new member the lowest id above every current member's, and answers it: start the
//! node with that id and REINADO_JOIN (or the peer address added). A learner added without `is_learner` is
//! promoted by the leader once it has caught up; one added with it stays a learner until MemberPromote.
//! MemberUpdate is UNIMPLEMENTED (remove the member and add it again).

use super::{EtcdApi, GrpcResult, etcd_error};
use crate::error::NodeError;
use crate::raft_loop::{MemberInfo, Reply, Request};
use reinado_proto::etcd::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_client::ClusterClient,
    cluster_server::Cluster,
};
use reinado_proto::v1::MemberContext;
use tonic::{Request as GrpcRequest, Response, Status};

/// A member as etcd names and addresses it: `node-<id>` once it has taken part in the cluster, and no name
/// before (etcd's way of saying "unstarted", which etcdctl prints).
fn member(m: &MemberInfo, started: bool) -> Member {
    let urls = |addr: &str| -> Vec<String> {
        if addr.is_empty() {
            Vec::new()
        } else {
            vec![format!("http://{addr}")]
        }
    };
    Member {
        id: m.id,
        name: if started {
            format!("node-{}", m.id)
        } else {
            String::new()
        },
        peer_ur_ls: urls(&m.peer_addr),
        client_ur_ls: urls(&m.client_addr),
        is_learner: !m.voter,
    }
}

impl EtcdApi {
    fn members(&self, infos: &[MemberInfo]) -> Vec<Member> {
        let sm = self.state();
        infos.iter().map(|m| member(m, sm.started(m.id))).collect()
    }
}

/// The `host:port` of the one peer URL a MemberAdd gives (`http://host:port`).
fn peer_addr(urls: &[String]) -> Result<String, NodeError> {
    let [url] = urls else {
        return Err(NodeError::InvalidArgument(format!(
            "etcdserver: Reinado members have exactly one peer URL; {} given",
            urls.len()
        )));
    };
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
        .trim_end_matches('/');
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(addr.to_string())
    } else {
        Err(NodeError::InvalidArgument(format!(
            "etcdserver: peer URL `{url}` is not http://host:port"
        )))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("Reinado does not implement etcd's {what}"))
}

impl EtcdApi {
    /// Asks the Raft loop for a membership change and waits for it to commit: the members after it, as
    /// etcd describes them.
    async fn change_members(
        &self,
        change: impl FnOnce(Reply<Vec<MemberInfo>>) -> Request,
    ) -> Result<Vec<Member>, NodeError> {
        let after = self
            .api
            .ask("the membership change to commit", change)
            .await
            .map_err(etcd_error)?;
        Ok(self.members(&after))
    }

    async fn member_infos(&self) -> Result<Vec<MemberInfo>, NodeError> {
        let report = self
            .api
            .ask("the node's status", |reply| Request::Status { reply })
            .await?;
        Ok(report.members)
    }
}

#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(
        &self,
        req: GrpcRequest<MemberAddRequest>,
    ) -> GrpcResult<MemberAddResponse> {
        let peer = peer_addr(&req.get_ref().peer_ur_ls)?;
        forward_unless_leader!(self, req, ClusterClient::member_add);
        let before = self.member_infos().await?;
        let id = before.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let ctx = MemberContext {
            peer_addr: peer,
            client_addr: String::new(),
            stay_learner: req.get_ref().is_learner,
            started: false,
        };
        let members = self
            .change_members(|reply| Request::AddMember { id, ctx, reply })
            .await?;
        let added = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(MemberAddResponse {
            header: Some(self.current_header()),
            member: added,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: GrpcRequest<MemberRemoveRequest>,
    ) -> GrpcResult<MemberRemoveResponse> {
        forward_unless_leader!(self, req, ClusterClient::member_remove);
        let id = req.into_inner().id;
        let members = self
            .change_members(|reply| Request::RemoveMember { id, reply })
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.current_header()),
            members,
        }))
    }

    async fn member_update(
        &self,
        _: GrpcRequest<MemberUpdateRequest>,
    ) -> GrpcResult<MemberUpdateResponse> {
        Err(unimplemented(
            "MemberUpdate: a member's addresses change by removing it and adding it again",
        ))
    }

    async fn member_list(
        &self,
        _: GrpcRequest<MemberListRequest>,
    ) -> GrpcResult<MemberListResponse> {
        let infos = self.member_infos().await?;
        Ok(Response::new(MemberListResponse {
            header: Some(self.current_header()),
            members: self.members(&infos),
        }))
    }

    async fn member_promote(
        &self,
        req: GrpcRequest<MemberPromoteRequest>,
    ) -> GrpcResult<MemberPromoteResponse> {
        forward_unless_leader!(self, req, ClusterClient::member_promote);
        let id = req.into_inner().id;
        let members = self
            .change_members(|reply| Request::PromoteMember { id, reply })
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.current_header()),
            members,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_named_and_addressed_as_etcd_does() {
        let info = MemberInfo {
            id: 3,
            peer_addr: "10.0.0.3:2380".into(),
            client_addr: String::new(),
            voter: false,
            match_index: 0,
            lag: 0,
            active: false,
        };
        let m = member(&info, true);
        assert_eq!(m.name, "node-3");
        assert_eq!(m.peer_ur_ls, vec!["http://10.0.0.3:2380".to_string()]);
        assert!(m.client_ur_ls.is_empty());
        assert!(m.is_learner);
        assert_eq!(member(&info, false).name, "", "unstarted");
    }

    #[test]
    fn peer_urls_must_be_one_host_and_port() {
        assert_eq!(peer_addr(&["http://h:1/".into()]).unwrap(), "h:1");
        assert!(peer_addr(&[]).is_err());
        assert!(peer_addr(&["a:1".into(), "b:2".into()]).is_err());
        assert!(peer_addr(&["http://h".into()]).is_err());
    }
}
