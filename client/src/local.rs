//! The fixed addresses of a localhost cluster, as started by `kvctl local up`.
//!
//! Node `id` (1-based) listens for clients on `127.0.0.1:7000+id` and for peers on
//! `127.0.0.1:7100+id`. The client ports of the default three nodes are `kvctl`'s default
//! endpoints, so `kvctl local up` in one terminal and `kvctl put k v` in another just work.

/// The host every local node binds and advertises.
pub const LOCAL_HOST: &str = "127.0.0.1";
/// Node `id` serves clients on `CLIENT_PORT_BASE + id` (7001, 7002, 7003, ...).
pub const CLIENT_PORT_BASE: u16 = 7000;
/// Node `id` serves peers on `PEER_PORT_BASE + id` (7101, 7102, 7103, ...).
pub const PEER_PORT_BASE: u16 = 7100;
/// How many nodes `kvctl local up` starts by default.
pub const DEFAULT_NODES: u16 = 3;
/// The most nodes a local cluster may have: keeps client ports below the peer port range.
pub const MAX_NODES: u16 = 99;

// The highest client port stays below the lowest peer port.
const _: () = assert!(CLIENT_PORT_BASE + MAX_NODES < PEER_PORT_BASE + 1);

/// The client address (`host:port`) of local node `id`.
pub fn client_addr(id: u16) -> String {
    format!("{LOCAL_HOST}:{}", CLIENT_PORT_BASE + id)
}

/// The peer address (`host:port`) of local node `id`.
pub fn peer_addr(id: u16) -> String {
    format!("{LOCAL_HOST}:{}", PEER_PORT_BASE + id)
}

/// The client addresses of a local cluster of `nodes` nodes.
pub fn endpoints(nodes: u16) -> Vec<String> {
    (1..=nodes).map(client_addr).collect()
}

/// The default endpoints: the client addresses of the default local cluster
/// (`127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`).
pub fn default_endpoints() -> Vec<String> {
    endpoints(DEFAULT_NODES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_the_documented_ones() {
        assert_eq!(
            default_endpoints(),
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert_eq!(peer_addr(3), "127.0.0.1:7103");
    }
}
