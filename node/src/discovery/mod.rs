//! Who the peers are: a static `--peers` list, or the DNS names of a StatefulSet behind a headless
//! Service (`--discovery dns:<service-fqdn>`).
//!
//! In Kubernetes every pod of a StatefulSet `kv` is `kv-<ordinal>`, reachable as
//! `kv-<ordinal>.<headless-service-fqdn>` once the headless Service publishes it (with
//! `publishNotReadyAddresses: true`, before it is ready). The node id is the ordinal + 1, so ids
//! are stable across restarts and reschedules, and the initial members `1..=N` are ordinals
//! `0..N-1`. Names, not addresses, are what the node keeps: the transport resolves them again on
//! every (re)connect, so a pod that comes back with a new IP is found again.
//!
//! Everything here is pure (strings in, plan out), so it is tested without DNS.

use std::collections::BTreeMap;
use std::str::FromStr;

use raftkv_raft::NodeId;

/// Why a `--discovery` flag, a pod's hostname or a DNS plan is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// `--discovery` is neither `static` nor `dns:<name>`.
    #[error("{0:?}: expected static or dns:<headless-service-fqdn>")]
    UnknownMode(String),
    /// The service of `dns:<name>` is not a DNS name.
    #[error("{0:?} is not a DNS name")]
    NotADnsName(String),
    /// The hostname has no `-<ordinal>` suffix.
    #[error("hostname {0:?} is not <statefulset>-<ordinal>; pass --id")]
    NoOrdinal(String),
    /// The hostname's suffix after the last `-` is not a number.
    #[error("hostname {0:?} does not end in a numeric ordinal; pass --id")]
    NonNumericOrdinal(String),
    /// Nothing usable before the ordinal.
    #[error("hostname {0:?} has no StatefulSet name")]
    NoSetName(String),
    /// An initial cluster of no members.
    #[error("--initial-cluster-size must be at least 1")]
    NoInitialMembers,
}

/// How a node finds its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// `--peers` lists them.
    Static,
    /// The pods of this node's StatefulSet, under a headless Service's DNS name.
    Dns {
        /// The headless Service's fully qualified name, e.g. `kv-peers.default.svc.cluster.local`.
        service: String,
    },
}

impl FromStr for Discovery {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "static" {
            return Ok(Discovery::Static);
        }
        let Some(service) = s.strip_prefix("dns:") else {
            return Err(DiscoveryError::UnknownMode(s.to_string()));
        };
        let service = service.trim_end_matches('.');
        if !is_dns_name(service) {
            return Err(DiscoveryError::NotADnsName(service.to_string()));
        }
        Ok(Discovery::Dns {
            service: service.to_string(),
        })
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A StatefulSet pod's identity, read from its hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// The StatefulSet's name (`kv` for `kv-2`).
    pub set: String,
    /// The pod's ordinal (`2` for `kv-2`).
    pub ordinal: u64,
}

impl PodIdentity {
    /// Parses `kv-2` (or `kv-2.anything`): the last `-` separates the set name from the ordinal.
    pub fn from_hostname(hostname: &str) -> Result<Self, DiscoveryError> {
        let host = hostname.split('.').next().unwrap_or_default();
        let (set, ordinal) = host
            .rsplit_once('-')
            .ok_or_else(|| DiscoveryError::NoOrdinal(hostname.to_string()))?;
        let ordinal: u64 = ordinal
            .parse()
            .map_err(|_| DiscoveryError::NonNumericOrdinal(hostname.to_string()))?;
        if set.is_empty() || !is_dns_name(set) {
            return Err(DiscoveryError::NoSetName(hostname.to_string()));
        }
        Ok(Self {
            set: set.to_string(),
            ordinal,
        })
    }

    /// The Raft node id: ordinal + 1 (0 is reserved for "none").
    pub fn node_id(&self) -> NodeId {
        self.ordinal + 1
    }
}

/// The DNS name of the pod with `ordinal` in `set` under `service`.
pub fn pod_name(set: &str, ordinal: u64, service: &str) -> String {
    format!("{set}-{ordinal}.{service}")
}

/// What a node in DNS mode runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPlan {
    /// This node's id.
    pub id: NodeId,
    /// `<pod>.<service>:<peer port>`.
    pub advertise_peer: String,
    /// `<pod>.<service>:<client port>`.
    pub advertise_client: String,
    /// The initial members' peer addresses, by id.
    pub peers: BTreeMap<NodeId, String>,
}

/// Plans a node of a StatefulSet: its id from the hostname, everyone's addresses from DNS names.
/// Members added later (scale-up) need no entry here: their addresses travel in the log.
pub fn dns_plan(
    hostname: &str,
    service: &str,
    peer_port: u16,
    client_port: u16,
    initial_cluster_size: u64,
) -> Result<DnsPlan, DiscoveryError> {
    let pod = PodIdentity::from_hostname(hostname)?;
    if initial_cluster_size == 0 {
        return Err(DiscoveryError::NoInitialMembers);
    }
    let me = pod_name(&pod.set, pod.ordinal, service);
    let peers = (0..initial_cluster_size)
        .map(|ordinal| {
            (
                ordinal + 1,
                format!("{}:{peer_port}", pod_name(&pod.set, ordinal, service)),
            )
        })
        .collect();
    Ok(DnsPlan {
        id: pod.node_id(),
        advertise_peer: format!("{me}:{peer_port}"),
        advertise_client: format!("{me}:{client_port}"),
        peers,
    })
}

/// This machine's hostname: `$HOSTNAME` if set (Kubernetes sets it to the pod name), else the
/// kernel's.
pub fn local_hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_discovery_flags() {
        assert_eq!("static".parse(), Ok(Discovery::Static));
        assert_eq!(
            "dns:kv-peers.default.svc.cluster.local.".parse(),
            Ok(Discovery::Dns {
                service: "kv-peers.default.svc.cluster.local".into()
            })
        );
        for bad in ["dns:", "dns:bad_name", "dns:-x.y", "consul:x", "dns:a..b"] {
            assert!(bad.parse::<Discovery>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_id_is_the_ordinal_plus_one() {
        let p = PodIdentity::from_hostname("kv-2").expect("valid");
        assert_eq!((p.set.as_str(), p.ordinal, p.node_id()), ("kv", 2, 3));
        let p = PodIdentity::from_hostname("my-kv-cluster-10.x").expect("valid");
        assert_eq!((p.set.as_str(), p.node_id()), ("my-kv-cluster", 11));
        for bad in ["kv", "kv-", "kv-x", "-3", ""] {
            assert!(PodIdentity::from_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_statefulset_names() {
        let plan = dns_plan("kv-1", "kv-peers.ns.svc.cluster.local", 7100, 7000, 3).expect("plan");
        assert_eq!(plan.id, 2);
        assert_eq!(
            plan.advertise_peer,
            "kv-1.kv-peers.ns.svc.cluster.local:7100"
        );
        assert_eq!(
            plan.advertise_client,
            "kv-1.kv-peers.ns.svc.cluster.local:7000"
        );
        assert_eq!(plan.peers.len(), 3);
        assert_eq!(plan.peers[&1], "kv-0.kv-peers.ns.svc.cluster.local:7100");
        assert_eq!(plan.peers[&3], "kv-2.kv-peers.ns.svc.cluster.local:7100");
        // A pod added by scale-up plans the same initial peers and its own id.
        let later = dns_plan("kv-4", "kv-peers.ns.svc.cluster.local", 7100, 7000, 3).expect("plan");
        assert_eq!(later.id, 5);
        assert_eq!(later.peers, plan.peers);
        assert!(dns_plan("kv-1", "s", 1, 2, 0).is_err());
    }
}
