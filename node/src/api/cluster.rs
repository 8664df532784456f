//! `raftkv.v1.Cluster`: status, membership and leader transfer.

use raftkv_proto::v1 as pb;
use raftkv_raft::Role;
use tonic::{Request, Response, Status};

use super::outcome::finish;
use crate::metrics::Metrics;

use crate::handle::{MemberState, MemberStatus, NodeHandle, NodeStatus};

/// The Cluster service of one node.
#[derive(Clone, Debug)]
pub struct ClusterService {
    node: NodeHandle,
    metrics: Option<std::sync::Arc<Metrics>>,
}

impl ClusterService {
    /// Serves the Cluster API through `node`.
    pub fn new(node: NodeHandle) -> Self {
        Self {
            node,
            metrics: None,
        }
    }

    /// Counts failed requests by status code in `metrics`, like the Kv service.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn do_status(&self) -> Result<pb::StatusResponse, Status> {
        if self.node.cluster_id().is_none() {
            // Loading its state, or fresh and deciding whether to bootstrap or join: say which
            // (a loading node reports its cluster id and term from disk, so that a deciding peer
            // never counts it as fresh).
            return Ok(status_to_wire(self.node.status_before_start()));
        }
        Ok(status_to_wire(self.node.status().await?))
    }

    async fn do_add_member(
        &self,
        r: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberResponse, Status> {
        if r.node_id == 0 {
            return Err(Status::invalid_argument("node_id must not be 0"));
        }
        validate_addr("peer_addr", &r.peer_addr)?;
        validate_addr("client_addr", &r.client_addr)?;
        let members = self
            .node
            .add_member(r.node_id, r.peer_addr, r.client_addr)
            .await?;
        Ok(pb::AddMemberResponse {
            members: members_to_wire(members),
        })
    }

    async fn do_remove_member(
        &self,
        r: pb::RemoveMemberRequest,
    ) -> Result<pb::RemoveMemberResponse, Status> {
        if r.node_id == 0 {
            return Err(Status::invalid_argument("node_id must not be 0"));
        }
        let members = self.node.remove_member(r.node_id).await?;
        Ok(pb::RemoveMemberResponse {
            members: members_to_wire(members),
        })
    }

    async fn do_transfer_leader(
        &self,
        r: pb::TransferLeaderRequest,
    ) -> Result<pb::TransferLeaderResponse, Status> {
        let leader_id = self.node.transfer_leader(r.node_id).await?;
        Ok(pb::TransferLeaderResponse { leader_id })
    }
}

fn role_to_wire(role: Role) -> pb::Role {
    match role {
        Role::Follower => pb::Role::Follower,
        Role::PreCandidate => pb::Role::PreCandidate,
        Role::Candidate => pb::Role::Candidate,
        Role::Leader => pb::Role::Leader,
    }
}

fn members_to_wire(members: Vec<MemberStatus>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|m| pb::Member {
            id: m.id,
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
            role: if m.voter {
                pb::MemberRole::Voter
            } else {
                pb::MemberRole::Learner
            } as i32,
            match_index: m.match_index,
            healthy: m.healthy,
        })
        .collect()
}

fn member_state_to_wire(state: MemberState) -> pb::MemberState {
    match state {
        MemberState::Loading => pb::MemberState::Loading,
        MemberState::Fresh => pb::MemberState::Fresh,
        MemberState::WaitingToBeAdded => pb::MemberState::WaitingToBeAdded,
        MemberState::CatchingUp => pb::MemberState::CatchingUp,
        MemberState::Learner => pb::MemberState::Learner,
        MemberState::Voter => pb::MemberState::Voter,
        MemberState::Removed => pb::MemberState::Removed,
    }
}

fn status_to_wire(s: NodeStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        node_id: s.node_id,
        role: role_to_wire(s.role) as i32,
        term: s.term,
        leader_id: s.leader_id,
        leader_client_addr: s.leader_client_addr,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        cluster_id: s.cluster_id,
        members: members_to_wire(s.members),
        member_state: member_state_to_wire(s.member_state) as i32,
        last_log_index: s.last_log_index,
        catch_up_index: s.catch_up_index,
        last_log_term: s.last_log_term,
    }
}

/// Checks that an address looks like `host:port`.
fn validate_addr(field: &str, addr: &str) -> Result<(), Status> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        return Err(Status::invalid_argument(format!(
            "{field} {addr:?} is not host:port"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        finish(self.metrics.as_deref(), self.do_status().await)
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_add_member(req.into_inner()).await,
        )
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_remove_member(req.into_inner()).await,
        )
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        finish(
            self.metrics.as_deref(),
            self.do_transfer_leader(req.into_inner()).await,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pb::cluster_server::Cluster as _;
    use tokio::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn failed_requests_are_counted_by_code() {
        let (tx, _rx) = mpsc::channel(1);
        let metrics = Metrics::new();
        let service = ClusterService::new(NodeHandle::new(1, tx, Arc::default()))
            .with_metrics(metrics.clone());
        let refused = service
            .remove_member(Request::new(pb::RemoveMemberRequest { node_id: 0 }))
            .await
            .expect_err("node 0 is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let text = metrics.render();
        assert!(
            text.contains("raftkv_rpc_errors_total{code=\"INVALID_ARGUMENT\"} 1"),
            "{text}"
        );
    }
}
