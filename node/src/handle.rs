//! The node's inbox: what the gRPC services (and tests) may ask of the driver, and how the answer
//! comes back.
//!
//! A [`NodeHandle`] is cheap to clone. Every call puts one request in the driver's bounded queue
//! and awaits a oneshot answer; a full queue is answered at once with
//! [`NodeError::Overloaded`] (RESOURCE_EXHAUSTED) rather than by waiting, so overload never piles
//! up unbounded work behind the Raft loop.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use raftkv_raft::{NodeId, Role};
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::kv::{Command, GetResponse, ScanResponse, WriteResponse};

/// How fresh a read must be (DESIGN.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// ReadIndex: confirmed with a quorum at the time of the read.
    Linearizable,
    /// Served by a leader that holds a lease, without a heartbeat round.
    Lease,
    /// Served from this node's applied state, possibly behind.
    Stale,
}

/// A read against the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    /// One key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// A key range `[start, end)`.
    Scan {
        /// First key.
        start: Bytes,
        /// End (exclusive); empty means to the last key.
        end: Bytes,
        /// At most this many items (already validated).
        limit: u32,
    },
}

/// The answer to a [`ReadQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// For `Get`.
    Get(GetResponse),
    /// For `Scan`.
    Scan(ScanResponse),
}

/// One member as `Cluster.Status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Where peers reach it.
    pub peer_addr: String,
    /// Where clients reach it.
    pub client_addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// Replication progress as the leader sees it (0 when this node is not the leader).
    pub match_index: u64,
    /// Whether it answered the leader recently (on a follower: whether it is this node).
    pub healthy: bool,
}

/// Where a node stands in its life as a member (`Cluster.Status.member_state`; the proto's
/// comments are the contract the operator decides by).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemberState {
    /// Ports open, state on disk still loading; never counted as fresh by a deciding peer.
    #[default]
    Loading,
    /// Empty data directory, asking peers whether a cluster exists.
    Fresh,
    /// Knows its cluster, not in its configuration (yet).
    WaitingToBeAdded,
    /// Rejoined with an empty log; below its catch-up barrier, so it does not vote.
    CatchingUp,
    /// A learner.
    Learner,
    /// A voter.
    Voter,
    /// Removed from the configuration.
    Removed,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it follows (0 = none known).
    pub leader_id: NodeId,
    /// The leader's client address, if known.
    pub leader_client_addr: String,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// The configuration in force.
    pub members: Vec<MemberStatus>,
    /// Where this node stands.
    pub member_state: MemberState,
    /// The index of the last entry in its log.
    pub last_log_index: u64,
    /// The term of that entry.
    pub last_log_term: u64,
    /// Its catch-up barrier while below it, else 0.
    pub catch_up_index: u64,
}

/// What the driver can be asked.
#[derive(Debug)]
pub(crate) enum DriverRequest {
    Propose {
        cmd: Command,
        reply: oneshot::Sender<Result<WriteResponse, NodeError>>,
    },
    Read {
        query: ReadQuery,
        consistency: Consistency,
        reply: oneshot::Sender<Result<ReadResult, NodeError>>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    AddMember {
        id: NodeId,
        peer_addr: String,
        client_addr: String,
        reply: oneshot::Sender<Result<Vec<MemberStatus>, NodeError>>,
    },
    RemoveMember {
        id: NodeId,
        reply: oneshot::Sender<Result<Vec<MemberStatus>, NodeError>>,
    },
    TransferLeader {
        id: NodeId,
        reply: oneshot::Sender<Result<NodeId, NodeError>>,
    },
}

/// A cloneable way to talk to a running node's driver.
///
/// The servers start before the node has decided which cluster it belongs to (so that peers can
/// ask it during bootstrap); until then every call answers UNAVAILABLE.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    id: NodeId,
    tx: mpsc::Sender<DriverRequest>,
    started: Arc<OnceLock<String>>,
    /// What `status` answers until the driver runs (loading, fresh, ...).
    before_start: Arc<Mutex<NodeStatus>>,
}

impl NodeHandle {
    pub(crate) fn new(
        id: NodeId,
        tx: mpsc::Sender<DriverRequest>,
        started: Arc<OnceLock<String>>,
    ) -> Self {
        let before_start = NodeStatus {
            node_id: id,
            ..NodeStatus::default()
        };
        Self {
            id,
            tx,
            started,
            before_start: Arc::new(Mutex::new(before_start)),
        }
    }

    /// Sets what `Cluster.Status` answers before the driver runs.
    pub(crate) fn set_status_before_start(&self, status: NodeStatus) {
        *crate::sync::lock(&self.before_start) = status;
    }

    /// What the node says about itself before its driver runs: loading its state (with the
    /// cluster id, term and log position from disk, so that no peer mistakes it for fresh) or
    /// fresh and deciding.
    pub fn status_before_start(&self) -> NodeStatus {
        crate::sync::lock(&self.before_start).clone()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster id, once the node has started its driver.
    pub fn cluster_id(&self) -> Option<&str> {
        self.started.get().map(String::as_str)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> DriverRequest,
    ) -> Result<T, NodeError> {
        if self.started.get().is_none() {
            return Err(NodeError::Unavailable("the node is starting".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                NodeError::Overloaded("the node's request queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Replicates a write and returns its result once applied.
    pub async fn propose(&self, cmd: Command) -> Result<WriteResponse, NodeError> {
        self.call(|reply| DriverRequest::Propose { cmd, reply })
            .await?
    }

    /// Serves a read at the requested consistency.
    pub async fn read(
        &self,
        query: ReadQuery,
        consistency: Consistency,
    ) -> Result<ReadResult, NodeError> {
        self.call(|reply| DriverRequest::Read {
            query,
            consistency,
            reply,
        })
        .await?
    }

    /// This node's status.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.call(|reply| DriverRequest::Status { reply }).await
    }

    /// Adds a learner (the leader promotes it once caught up).
    pub async fn add_member(
        &self,
        id: NodeId,
        peer_addr: String,
        client_addr: String,
    ) -> Result<Vec<MemberStatus>, NodeError> {
        self.call(|reply| DriverRequest::AddMember {
            id,
            peer_addr,
            client_addr,
            reply,
        })
        .await?
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberStatus>, NodeError> {
        self.call(|reply| DriverRequest::RemoveMember { id, reply })
            .await?
    }

    /// Hands leadership to `id` (0 = the most caught-up voter) and returns the new leader.
    pub async fn transfer_leader(&self, id: NodeId) -> Result<NodeId, NodeError> {
        self.call(|reply| DriverRequest::TransferLeader { id, reply })
            .await?
    }
}
