//! Which cluster a node belongs to: its identity file, and for a node with an empty data
//! directory, the decision to bootstrap the initial configuration or to join a running cluster.
//!
//! # The identity file (`cluster_id` in the data directory)
//! Line 1 is the cluster id. Line 2, when present, says how the node came to it:
//! - `bootstrap <size>`: the node decided to bootstrap the initial configuration `1..=size`. It is
//!   written *before* the Raft state, so a crash between the two leaves a node that redoes the
//!   (deterministic) bootstrap writes on restart, instead of Raft state without a cluster id;
//! - `catch-up <index> <log-term> <term>`: the node joined a running cluster with an empty log;
//!   these are its catch-up barrier ([`raftkv_raft::Config::catch_up_index`]), kept for as long as
//!   the data directory lives (a satisfied barrier costs nothing).
//!
//! A file of one line (written by earlier versions) is a node that joined with no barrier.
//! The file is replaced atomically (temp file, fsync, rename, fsync of the directory).
//!
//! # Bootstrap or join
//! A node with Raft state on disk ignores every bootstrap flag. A node with an empty data
//! directory serves both ports at once (Status answers "fresh"; Raft and Kv traffic is refused) and
//! asks its peers for their status, every half second:
//! - if any of them belongs to a cluster that has elected a leader (term above the bootstrap term,
//!   or a known leader), this node must not bootstrap: it may be a member whose volume was lost. It
//!   adopts that cluster's id and learns a catch-up barrier from a quorum of the other voters'
//!   logs ([`raftkv_raft::catch_up_barrier`]); until its log is that up-to-date it votes only for
//!   candidates whose logs are, so it cannot help elect a leader that lacks an entry it had
//!   acknowledged before its volume was lost. While too few voters answer, it keeps asking;
//! - an initial member (`id <= initial_cluster_size`) bootstraps the first configuration
//!   `1..=initial_cluster_size` only when a quorum of that configuration, itself included, has
//!   answered that it is not in a running cluster. Why a quorum: a cluster that ever elected a
//!   leader has a quorum of its initial voters at a term above the bootstrap term, so such a
//!   quorum proves there is no such cluster, whereas peers that merely do not answer prove
//!   nothing. A peer that is still loading its state from disk answers with the term on its disk
//!   (Status `MEMBER_STATE_LOADING`), never as fresh. Every initial member writes the same
//!   bootstrap entry, and the cluster id is derived from `--initial-cluster-token` and the
//!   configuration, so they agree without further talk;
//! - a node that is not an initial member waits until it finds the running cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftkv_proto::v1 as pb;
use raftkv_raft::{CatchUp, NodeId, PeerLog, RawNode};
use tracing::info;

use crate::config::{NodeConfig, StartError};
use crate::handle::{MemberState, NodeHandle, NodeStatus};
use crate::storage::{DiskStorage, LogStorage, RecoveredState};

const IDENTITY_FILE: &str = "cluster_id";

/// How a node came to its cluster (line 2 of the identity file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A file of one line, from an earlier version: joined, no barrier known.
    Unrecorded,
    /// Decided to bootstrap the initial configuration `1..=size`.
    Bootstrap {
        /// The initial cluster size.
        size: u64,
    },
    /// Joined a running cluster with an empty log.
    Joined(CatchUp),
}

/// The identity file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub cluster_id: String,
    pub origin: Origin,
}

/// Why an identity file does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum IdentityError {
    /// The first line is not a cluster id (1-128 printable ASCII characters).
    #[error("line 1 is not a valid cluster id")]
    ClusterId,
    /// A field of the second line is not a number.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// The second line is neither `bootstrap N` nor `catch-up I LT T`.
    #[error("line 2 {0:?} is not understood")]
    Origin(String),
}

impl Identity {
    fn encode(&self) -> String {
        match self.origin {
            Origin::Unrecorded => format!("{}\n", self.cluster_id),
            Origin::Bootstrap { size } => format!("{}\nbootstrap {size}\n", self.cluster_id),
            Origin::Joined(b) => format!(
                "{}\ncatch-up {} {} {}\n",
                self.cluster_id, b.index, b.log_term, b.term
            ),
        }
    }

    fn decode(text: &str) -> Result<Self, IdentityError> {
        let mut lines = text.lines();
        let cluster_id = lines.next().unwrap_or("").trim().to_string();
        if cluster_id.is_empty()
            || cluster_id.len() > 128
            || !cluster_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(IdentityError::ClusterId);
        }
        let origin = match lines.next().map(str::trim) {
            None | Some("") => Origin::Unrecorded,
            Some(line) => {
                let words: Vec<&str> = line.split_ascii_whitespace().collect();
                let num = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|_| IdentityError::NotANumber(s.to_string()))
                };
                match words.as_slice() {
                    ["bootstrap", size] => Origin::Bootstrap { size: num(size)? },
                    ["catch-up", index, log_term, term] => Origin::Joined(CatchUp {
                        index: num(index)?,
                        log_term: num(log_term)?,
                        term: num(term)?,
                    }),
                    _ => return Err(IdentityError::Origin(line.to_string())),
                }
            }
        };
        Ok(Self { cluster_id, origin })
    }

    /// The catch-up barrier to start the core with, if any.
    pub fn catch_up(&self) -> Option<CatchUp> {
        match self.origin {
            Origin::Joined(b) => Some(b),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the identity file; `None` if there is none.
pub(crate) fn read_identity(dir: &Path) -> Result<Option<Identity>, StartError> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Identity::decode(&text).map(Some).map_err(|why| {
            StartError::Invalid(format!(
                "{} does not hold a valid cluster identity: {why}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes the identity file atomically: temp file, fsync, rename, fsync the directory.
fn write_identity(dir: &Path, identity: &Identity) -> Result<(), StartError> {
    use std::io::Write;
    let tmp: PathBuf = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let path = dir.join(IDENTITY_FILE);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(identity.encode().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// The cluster id of a cluster bootstrapped from `token` with voters `1..=size`: FNV-1a over
/// both, so every initial member computes the same id on its own.
pub fn derive_cluster_id(token: &str, size: u64) -> String {
    let mut h = crate::codec::Fnv1a64::new();
    h.update(token.as_bytes());
    h.update(b"\0");
    h.update(size.to_string().as_bytes());
    format!("{:016x}", h.finish())
}

/// Writes the bootstrap configuration `1..=size` (entry 1 and the hard state) and fsyncs.
/// Deterministic, so redoing it after a crash writes the same state.
pub(crate) fn write_bootstrap_state(
    storage: &mut DiskStorage,
    size: u64,
) -> Result<RecoveredState, StartError> {
    let boot = RawNode::bootstrap(1..=size);
    storage.append(&boot.entries)?;
    storage.set_hard_state(boot.hard_state)?;
    storage.sync()?;
    Ok(storage.initial_state()?)
}

/// What `Cluster.Status` says before the driver runs, from what is on disk.
pub(crate) fn status_on_disk(
    id: NodeId,
    recovered: &RecoveredState,
    identity: Option<&Identity>,
) -> NodeStatus {
    let (last_log_index, last_log_term) = match (recovered.entries.last(), &recovered.snapshot) {
        (Some(e), _) => (e.index, e.term),
        (None, Some(s)) => (s.index, s.term),
        (None, None) => (0, 0),
    };
    let has_anything = identity.is_some() || has_state(recovered);
    NodeStatus {
        node_id: id,
        term: recovered.hard_state.term,
        commit_index: recovered.hard_state.commit,
        cluster_id: identity.map(|i| i.cluster_id.clone()).unwrap_or_default(),
        member_state: if has_anything {
            MemberState::Loading
        } else {
            MemberState::Fresh
        },
        last_log_index,
        last_log_term,
        ..NodeStatus::default()
    }
}

/// Whether storage recovered any Raft state.
pub(crate) fn has_state(r: &RecoveredState) -> bool {
    r.snapshot.is_some() || !r.entries.is_empty() || r.hard_state != Default::default()
}

/// What a peer said about itself.
struct PeerView {
    status: pb::StatusResponse,
}

impl PeerView {
    /// Part of a cluster that has elected a leader.
    fn is_running(&self) -> bool {
        !self.status.cluster_id.is_empty() && (self.status.term > 1 || self.status.leader_id != 0)
    }

    fn peer_log(&self) -> PeerLog {
        PeerLog {
            id: self.status.node_id,
            term: self.status.term,
            last_index: self.status.last_log_index,
            last_log_term: self.status.last_log_term,
            voters: self
                .status
                .members
                .iter()
                .filter(|m| m.role == pb::MemberRole::Voter as i32)
                .map(|m| m.id)
                .collect(),
        }
    }
}

/// One lazily connected channel per peer address, kept across rounds: a node asks every half
/// second for as long as it decides, and must not dial a new connection each time.
///
/// With peer TLS, peers are asked over mutual TLS like all peer traffic: the answer that lets a
/// node bootstrap then comes from a certificate valid for the address asked, not from whoever
/// answers at it.
#[derive(Default)]
struct PeerChannels {
    channels: BTreeMap<String, tonic::transport::Channel>,
    tls: Option<raftkv_proto::tls::Connector>,
    log: std::sync::Arc<crate::tls::LogOnce>,
}

impl PeerChannels {
    fn channel(&mut self, addr: &str) -> Option<tonic::transport::Channel> {
        if let Some(c) = self.channels.get(addr) {
            return Some(c.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1));
        let channel = match &self.tls {
            Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
            None => endpoint.connect_lazy(),
        };
        self.channels.insert(addr.to_owned(), channel.clone());
        Some(channel)
    }
}

async fn ask_peer(
    id: NodeId,
    channel: tonic::transport::Channel,
    log: &crate::tls::LogOnce,
) -> Option<PeerView> {
    let answer = pb::cluster_client::ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await;
    let status = match answer {
        Ok(response) => response.into_inner(),
        Err(e) => {
            // A TLS failure does not heal by asking again: say so, once per peer and reason.
            if let Some(reason) = raftkv_proto::tls::explain(&e)
                && log.should_log(&format!("node {id}"), &reason)
            {
                tracing::warn!(peer = id, %reason, "cannot ask a peer: TLS refused");
            }
            return None;
        }
    };
    Some(PeerView { status })
}

/// Asks every peer at once; the answers of those that answered.
///
/// An answer counts only if it comes from the member that was asked: a process answering at a
/// peer's address under another id (a misconfigured address, or a port reused by another
/// cluster's node) must not count towards the quorum that lets this node bootstrap.
async fn ask_peers(peers: &BTreeMap<NodeId, String>, channels: &mut PeerChannels) -> Vec<PeerView> {
    let log = channels.log.clone();
    let asks: Vec<_> = peers
        .iter()
        .filter_map(|(&id, addr)| Some((id, channels.channel(addr)?)))
        .map(|(id, channel)| {
            let log = log.clone();
            async move {
                let view = ask_peer(id, channel, &log).await?;
                if view.status.node_id != id {
                    info!(
                        asked = id,
                        answered = view.status.node_id,
                        "a peer answered under another id; its answer is ignored"
                    );
                    return None;
                }
                Some(view)
            }
        })
        .collect();
    crate::task::join_all(asks.into_iter())
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Decides, for a node with an empty data directory, whether to join a running cluster or to
/// bootstrap the initial one (see the module docs). Returns its identity, and the state to start
/// from when it bootstrapped.
pub(crate) async fn bootstrap_or_join(
    cfg: &NodeConfig,
    storage: &mut DiskStorage,
    handle: &NodeHandle,
    tls: Option<raftkv_proto::tls::Connector>,
) -> Result<(Identity, Option<RecoveredState>), StartError> {
    let mut peers: BTreeMap<NodeId, String> = cfg
        .peers
        .iter()
        .filter(|(id, _)| **id != cfg.id)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let size = cfg.initial_cluster_size;
    let initial = cfg.id <= size;
    let quorum = size / 2 + 1;
    let mut rounds = 0u64;
    let mut channels = PeerChannels {
        channels: BTreeMap::new(),
        tls,
        log: Default::default(),
    };
    loop {
        let views = ask_peers(&peers, &mut channels).await;
        // Members the answers name are asked too (a cluster may have grown past --peers).
        for v in &views {
            for m in &v.status.members {
                if m.id != cfg.id && !m.peer_addr.is_empty() {
                    peers.entry(m.id).or_insert_with(|| m.peer_addr.clone());
                }
            }
        }
        if let Some(running) = views.iter().find(|v| v.is_running()) {
            let cluster_id = running.status.cluster_id.clone();
            let logs: Vec<PeerLog> = views
                .iter()
                .filter(|v| v.status.cluster_id == cluster_id)
                .map(PeerView::peer_log)
                .collect();
            if let Some(barrier) = raftkv_raft::catch_up_barrier(cfg.id, &logs) {
                info!(
                    %cluster_id,
                    catch_up_index = barrier.index,
                    catch_up_term = barrier.term,
                    "found a running cluster; joining it with a catch-up barrier"
                );
                let identity = Identity {
                    cluster_id,
                    origin: Origin::Joined(barrier),
                };
                write_identity(&cfg.data_dir, &identity)?;
                return Ok((identity, None));
            }
            if rounds.is_multiple_of(20) {
                info!(
                    %cluster_id,
                    answers = logs.len(),
                    "found a running cluster; waiting for enough voters to answer to learn how \
                     far it has committed"
                );
            }
        } else {
            let not_running = 1 + views
                .iter()
                .filter(|v| {
                    let id = v.status.node_id;
                    id != cfg.id && id >= 1 && id <= size
                })
                .count() as u64;
            if initial && not_running >= quorum {
                let identity = Identity {
                    cluster_id: derive_cluster_id(&cfg.initial_cluster_token, size),
                    origin: Origin::Bootstrap { size },
                };
                // The identity first: a crash before the Raft state is written leaves a node
                // that redoes the bootstrap, never Raft state without a cluster id.
                write_identity(&cfg.data_dir, &identity)?;
                handle.set_status_before_start(NodeStatus {
                    node_id: cfg.id,
                    cluster_id: identity.cluster_id.clone(),
                    ..NodeStatus::default()
                });
                let state = write_bootstrap_state(storage, size)?;
                info!(cluster_id = %identity.cluster_id, size, "bootstrapped a new cluster");
                return Ok((identity, Some(state)));
            }
            if rounds.is_multiple_of(20) {
                if initial {
                    info!(
                        fresh = not_running,
                        quorum, "waiting for a quorum of initial members to answer"
                    );
                } else {
                    info!("not an initial member: waiting to find the running cluster");
                }
            }
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_depend_on_token_and_size() {
        let a = derive_cluster_id("raftkv", 3);
        assert_eq!(a, derive_cluster_id("raftkv", 3));
        assert_ne!(a, derive_cluster_id("raftkv", 5));
        assert_ne!(a, derive_cluster_id("other", 3));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn identity_files_round_trip_and_old_files_still_read() {
        for origin in [
            Origin::Unrecorded,
            Origin::Bootstrap { size: 3 },
            Origin::Joined(CatchUp {
                index: 42,
                log_term: 7,
                term: 9,
            }),
        ] {
            let id = Identity {
                cluster_id: "c0ffee".into(),
                origin,
            };
            assert_eq!(Identity::decode(&id.encode()), Ok(id));
        }
        assert_eq!(
            Identity::decode("abc\n").map(|i| i.origin),
            Ok(Origin::Unrecorded)
        );
        assert!(Identity::decode("").is_err());
        assert!(Identity::decode("abc\nbootstrap x\n").is_err());
        assert!(Identity::decode("abc\nsomething else\n").is_err());
        assert!(Identity::decode("a b\n").is_err());
    }
}
