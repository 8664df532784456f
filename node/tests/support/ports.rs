//! Ports for the nodes of a process [`Cluster`](super::cluster::Cluster) on 127.0.0.1.
//!
//! Ports are picked at random *below* the kernel's ephemeral range and checked by binding: the
//! ephemeral range is where `bind(:0)` in other tests and every outgoing connection take their
//! ports, so a port picked there could be gone again by the time `kvnode` (re)binds it. A port
//! is never handed out twice by one test process, so concurrent clusters (and a node restarting
//! on its old ports) do not collide. A start that still loses a port race is retried by the
//! cluster with fresh ports.

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use super::{lock, random_u64};

/// Ports handed out by this process, never handed out twice: clusters of concurrent tests (and
/// a node restarting on its old ports) must not collide with each other.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` distinct ports that were free a moment ago. See the module docs for why they come from
/// below the ephemeral range.
pub fn reserve_ports(count: usize) -> Vec<u16> {
    let mut handed_out = lock(&HANDED_OUT);
    let (low, high) = port_range();
    let mut ports = Vec::with_capacity(count);
    for _ in 0..100_000 {
        if ports.len() == count {
            break;
        }
        let port = match (low, high) {
            (Some(low), Some(high)) => low + (random_u64() % u64::from(high - low)) as u16,
            // No usable range below the ephemeral one: let the kernel pick.
            _ => match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(_) => continue,
            },
        };
        if !handed_out.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "could not find {count} free ports");
    ports
}

/// `[20000, start of the ephemeral range)`, if that range is reasonably large.
fn port_range() -> (Option<u16>, Option<u16>) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 20_000u16;
    if ephemeral_low >= low + 2_000 {
        (Some(low), Some(ephemeral_low))
    } else {
        (None, None)
    }
}
