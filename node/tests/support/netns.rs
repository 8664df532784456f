//! Test hosts in network namespaces: each `kvnode` gets its own namespace, its own IP and its own
//! `/etc/hosts`, so that tests can use real addresses, StatefulSet-style DNS names and network
//! partitions without touching anything outside the namespaces they create.
//!
//! Layout of one [`Net`] (everything is created by the test and deleted again in `Drop`):
//!
//! ```text
//!   root namespace (the test process, its clients)
//!     rkvh<S>  10.213.S.1/24 ─┐ veth
//!   rkv<pid>-<n>-hub          │
//!     br0 (bridge) ── host ───┘
//!        ├── h-<a> ── veth ── rkv<pid>-<n>-<a>: eth0 10.213.S.x/24, lo, /etc/netns/…/hosts
//!        └── h-<b> ── veth ── rkv<pid>-<n>-<b>: eth0 10.213.S.y/24, lo
//! ```
//!
//! - The subnet `10.213.S.0/24` is private to this test: `S` is claimed by creating the root
//!   namespace's veth end `rkvh<S>`, which fails if another test process (of this or another
//!   engineer) already has it — the kernel makes the claim atomic. Nothing here has a default
//!   route, so no traffic can leave the test subnet.
//! - Names resolve through the real system resolver: `ip netns exec` bind-mounts every file of
//!   `/etc/netns/<ns>/` over `/etc/`, so each namespace's `hosts` file is the one glibc reads.
//!   The files are rewritten *in place* (truncate and write, never rename): a bind mount pins
//!   the inode, so a renamed replacement would never be seen by a running node. Each namespace
//!   also gets a `resolv.conf` pointing at its own loopback, so a name that is not (yet) in the
//!   hosts file fails at once instead of being asked of a real DNS server.
//! - Partitions: [`Net::isolate`] takes a host's bridge port down (no packet in or out, for
//!   peers and clients alike); [`Net::cut_peers`] drops only traffic between the host and the
//!   other hosts with an nftables (or iptables) rule inside its namespace, so that the test's
//!   clients still reach it — what a deposed leader that still serves reads needs.
//! - Docker's packet filter does not reach this traffic. A Docker engine sets the FORWARD
//!   policy to DROP, and with `br_netfilter` loaded, frames crossing a Linux bridge are passed
//!   through the FORWARD chain of *the bridge's* namespace. The bridge here lives in the hub
//!   namespace, whose (empty) tables Docker never touches, so these tests work on a machine
//!   where Docker runs, also while containers of `container_e2e.rs` are up.
//! - Clean-up: `Drop` deletes the namespaces (which destroys their veths, hence the root end
//!   too), the root veth and the `/etc/netns/<ns>` directories, also while a test panics. If a
//!   test process is SIGKILLed, a later [`Net::new`] in any test process sweeps the namespaces
//!   whose creator pid is gone and that are over an hour old.
//!
//! Needs root and a working `ip netns`; see [`netns_or_skip`] for how tests that need it behave
//! where it is missing.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first two octets of every test subnet.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
/// Where `ip netns exec` looks for per-namespace files that replace those in `/etc`.
const NETNS_ETC: &str = "/etc/netns";
/// How old a namespace of a dead test process must be before [`Net::new`] deletes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
/// The nftables table that [`Net::cut_peers`] adds to a namespace.
const NFT_TABLE: &str = "rkv_partition";

/// Whether network namespaces can be used here: `Ok` or why not.
pub fn netns_available() -> Result<(), String> {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err(format!("not running as root (effective uid {uid:?})"));
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `ip`: {e}")),
    }
}

/// The skip rule of every test that needs network namespaces: returns `true` if the test can
/// run. Where namespaces are unavailable it prints a loud skip message and returns `false` —
/// except under CI (`CI=true`), where a skipped proof is a hole, so it panics instead.
pub fn netns_or_skip(test: &str) -> bool {
    let Err(why) = netns_available() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: network namespaces are required in CI, but unavailable: {why}");
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPED {test}: network namespaces unavailable ({why}).\n!! Run as root \
         with iproute2 to run it; under CI=true this is a failure.\n{bar}\n"
    );
    false
}

/// One test host: a namespace with one address on the test subnet.
#[derive(Clone, Debug)]
struct Host {
    /// The namespace's name.
    ns: String,
    /// The hub's end of its veth (the bridge port).
    port: String,
    ip: Ipv4Addr,
    /// Isolated with [`Net::isolate`] (bridge port down).
    isolated: bool,
    /// Cut from the other hosts with [`Net::cut_peers`].
    cut: bool,
}

/// A private test network of namespaces. See the module docs.
pub struct Net {
    /// `rkv<pid>-<n>`: the prefix of every namespace of this net.
    prefix: String,
    hub: String,
    /// The third octet of the subnet.
    subnet: u8,
    /// The root namespace's veth end; its name is the claim on the subnet.
    root_link: String,
    hosts: BTreeMap<String, Host>,
    /// The next host number to hand out (`10.213.S.<n>`); never reused, so a moved host's old
    /// address stays dead.
    next_host: u8,
    /// The hosts-file entries every namespace sees: name -> address.
    names: BTreeMap<String, Ipv4Addr>,
    /// Namespaces and `/etc/netns` dirs created so far, for `Drop`.
    created: Vec<String>,
}

impl Net {
    /// Creates the hub namespace with its bridge and the veth into the root namespace, on a
    /// subnet no other live test uses. Panics (naming the command) if a step fails.
    pub fn new() -> Net {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "rkv{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{prefix}-hub");
        let mut net = Net {
            prefix,
            hub: hub.clone(),
            subnet: 0,
            root_link: String::new(),
            hosts: BTreeMap::new(),
            next_host: 10,
            names: BTreeMap::new(),
            created: Vec::new(),
        };
        ip(&["netns", "add", &hub]);
        net.created.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        // Claim a subnet: the root end's name is unique per subnet, and creating a link whose
        // name exists fails, so two test processes can never get the same one. Start at a
        // random place so that concurrent tests rarely even collide.
        let start = (std::process::id() as usize * 7 + net.created.len()) % 250;
        for i in 0..250 {
            let s = ((start + i) % 250 + 1) as u8;
            let link = format!("rkvh{s}");
            match try_ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "host", "netns", &hub,
            ]) {
                Ok(()) => {
                    net.subnet = s;
                    net.root_link = link;
                    break;
                }
                // Another live test holds this subnet.
                Err(e) if e.contains("File exists") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            !net.root_link.is_empty(),
            "no free test subnet 10.213.x.0/24 (250 in use?)"
        );
        let root_ip = format!("{}/24", net.root_ip());
        ip(&["addr", "add", &root_ip, "dev", &net.root_link]);
        ip(&["link", "set", &net.root_link, "up"]);
        ip(&["-n", &hub, "link", "set", "host", "master", "br0"]);
        ip(&["-n", &hub, "link", "set", "host", "up"]);
        net
    }

    /// The test process's address on the subnet (the root namespace's end).
    pub fn root_ip(&self) -> Ipv4Addr {
        let [a, b] = SUBNET_PREFIX;
        Ipv4Addr::new(a, b, self.subnet, 1)
    }

    fn host_ip(&self, n: u8) -> Ipv4Addr {
        let [a, b] = SUBNET_PREFIX;
        Ipv4Addr::new(a, b, self.subnet, n)
    }

    /// Adds a host named `label` (short: it is part of a link name) with a fresh address, and
    /// returns the address.
    pub fn add_host(&mut self, label: &str) -> Ipv4Addr {
        assert!(
            !self.hosts.contains_key(label),
            "host {label} exists already"
        );
        assert!(label.len() <= 12, "host label {label:?} is too long");
        let ns = format!("{}-{label}", self.prefix);
        let port = format!("h-{label}");
        ip(&["netns", "add", &ns]);
        self.created.push(ns.clone());
        let etc = PathBuf::from(NETNS_ETC).join(&ns);
        fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("create {}: {e}", etc.display()));
        write_in_place(
            &etc.join("resolv.conf"),
            "# raftkv test namespace: names come from the hosts file only\n\
             nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &self.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &self.hub, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &self.hub, "link", "set", &port, "up"]);
        let n = self.take_host_number();
        let ip_addr = self.host_ip(n);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip_addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.hosts.insert(
            label.to_owned(),
            Host {
                ns,
                port,
                ip: ip_addr,
                isolated: false,
                cut: false,
            },
        );
        // The new namespace needs its hosts file too.
        self.write_hosts_files();
        ip_addr
    }

    fn take_host_number(&mut self) -> u8 {
        let n = self.next_host;
        assert!(n < 255, "out of host addresses on the test subnet");
        self.next_host += 1;
        n
    }

    fn host(&self, label: &str) -> &Host {
        self.hosts
            .get(label)
            .unwrap_or_else(|| panic!("no test host {label}"))
    }

    fn host_mut(&mut self, label: &str) -> &mut Host {
        self.hosts
            .get_mut(label)
            .unwrap_or_else(|| panic!("no test host {label}"))
    }

    /// Host `label`'s current address.
    pub fn ip(&self, label: &str) -> Ipv4Addr {
        self.host(label).ip
    }

    /// Host `label`'s namespace name.
    pub fn ns(&self, label: &str) -> &str {
        &self.host(label).ns
    }

    /// The command prefix that runs a program inside host `label`'s namespace (with its hosts
    /// file): `ip netns exec <ns>`. `ip` execs the program, so the child's pid is the program's.
    pub fn exec_prefix(&self, label: &str) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.ns(label).to_owned(),
        ]
    }

    /// Gives host `label` a new address (the old one disappears from the network), like a pod
    /// rescheduled with a new IP. Hosts-file entries are not touched: see [`Net::set_name`].
    pub fn readdress(&mut self, label: &str) -> Ipv4Addr {
        let n = self.take_host_number();
        let new = self.host_ip(n);
        let (ns, old) = {
            let h = self.host(label);
            (h.ns.clone(), h.ip)
        };
        // Delete first: deleting a primary address also deletes the secondaries of its subnet.
        ip(&[
            "-n",
            &ns,
            "addr",
            "del",
            &format!("{old}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{new}/24"),
            "dev",
            "eth0",
        ]);
        self.host_mut(label).ip = new;
        new
    }

    /// Sets (`Some`) or removes (`None`) the hosts-file entry `name` in every namespace of the
    /// net, in place. A name that is not there does not resolve (like a pod's DNS record before
    /// the pod exists).
    pub fn set_name(&mut self, name: &str, addr: Option<Ipv4Addr>) {
        match addr {
            Some(a) => self.names.insert(name.to_owned(), a),
            None => self.names.remove(name),
        };
        self.write_hosts_files();
    }

    fn write_hosts_files(&self) {
        let mut text = String::from("# raftkv test namespace (rewritten in place by the test)\n");
        text.push_str("127.0.0.1 localhost\n");
        for (name, addr) in &self.names {
            text.push_str(&format!("{addr} {name}\n"));
        }
        for host in self.hosts.values() {
            write_in_place(
                &PathBuf::from(NETNS_ETC).join(&host.ns).join("hosts"),
                &text,
            );
        }
    }

    /// Cuts host `label` off the network entirely (its bridge port goes down): no packet to or
    /// from the other hosts or the test's clients. Established connections stay open but hear
    /// nothing, as in a real partition.
    pub fn isolate(&mut self, label: &str) {
        let port = self.host(label).port.clone();
        ip(&["-n", &self.hub, "link", "set", &port, "down"]);
        self.host_mut(label).isolated = true;
    }

    /// Drops every packet between host `label` and the other hosts (both directions), while
    /// the test process still reaches it. Returns `false` (and changes nothing) if neither
    /// `nft` nor `iptables` works here.
    pub fn cut_peers(&mut self, label: &str) -> bool {
        let (ns, root, subnet) = (
            self.host(label).ns.clone(),
            self.root_ip(),
            format!("{}/24", self.host_ip(0)),
        );
        let rules = format!(
            "table inet {NFT_TABLE} {{\n\
             chain input {{ type filter hook input priority 0; policy accept;\n\
               iif \"lo\" accept; ip saddr {root} accept; ip saddr {subnet} drop; }}\n\
             chain output {{ type filter hook output priority 0; policy accept;\n\
               oif \"lo\" accept; ip daddr {root} accept; ip daddr {subnet} drop; }}\n\
             }}\n"
        );
        let nft = run_with_stdin(&["ip", "netns", "exec", &ns, "nft", "-f", "-"], &rules);
        let ok = nft.is_ok() || {
            let root = root.to_string();
            let rules: [&[&str]; 4] = [
                &["INPUT", "-s", &root, "-j", "ACCEPT"],
                &["INPUT", "-s", &subnet, "-j", "DROP"],
                &["OUTPUT", "-d", &root, "-j", "ACCEPT"],
                &["OUTPUT", "-d", &subnet, "-j", "DROP"],
            ];
            rules.iter().all(|r| {
                let mut args = vec!["netns", "exec", &ns, "iptables", "-w", "-A"];
                args.extend_from_slice(r);
                try_ip(&args).is_ok()
            })
        };
        if ok {
            self.host_mut(label).cut = true;
        }
        ok
    }

    /// Whether [`Net::cut_peers`] can work here (nft or iptables answers).
    pub fn can_cut_peers() -> bool {
        let works = |prog: &str, arg: &str| {
            Command::new(prog)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        works("nft", "--version") || works("iptables", "--version")
    }

    /// Undoes [`Net::isolate`] and [`Net::cut_peers`] for host `label`.
    pub fn heal(&mut self, label: &str) {
        let host = self.host(label).clone();
        if host.isolated {
            ip(&["-n", &self.hub, "link", "set", &host.port, "up"]);
        }
        if host.cut {
            let nft = try_ip(&[
                "netns", "exec", &host.ns, "nft", "delete", "table", "inet", NFT_TABLE,
            ]);
            if nft.is_err() {
                // The cut was made with iptables; flush its two chains.
                let _ = try_ip(&["netns", "exec", &host.ns, "iptables", "-w", "-F", "INPUT"]);
                let _ = try_ip(&["netns", "exec", &host.ns, "iptables", "-w", "-F", "OUTPUT"]);
            }
        }
        let h = self.host_mut(label);
        h.isolated = false;
        h.cut = false;
    }

    /// Heals every host.
    pub fn heal_all(&mut self) {
        let labels: Vec<String> = self.hosts.keys().cloned().collect();
        for label in labels {
            self.heal(&label);
        }
    }

    /// Whether host `label` is cut off entirely ([`Net::isolate`]) right now.
    pub fn is_isolated(&self, label: &str) -> bool {
        self.host(label).isolated
    }

    /// Whether host `label` is isolated or cut right now.
    pub fn is_partitioned(&self, label: &str) -> bool {
        let h = self.host(label);
        h.isolated || h.cut
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veths in it and so their peers; the root end is
        // deleted explicitly too, because namespace teardown is asynchronous in the kernel and
        // the link name is the subnet's claim.
        if !self.root_link.is_empty() {
            let _ = try_ip(&["link", "del", &self.root_link]);
        }
        for ns in self.created.iter().rev() {
            let _ = try_ip(&["netns", "del", ns]);
            let _ = fs::remove_dir_all(PathBuf::from(NETNS_ETC).join(ns));
        }
    }
}

/// Deletes the namespaces (and their `/etc/netns` dirs) of test processes that are gone, e.g.
/// SIGKILLed by a CI timeout before their `Drop` ran.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("rkv")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Old enough too: a test process in another pid namespace (another container sharing
        // this network namespace list) looks dead from here, but no test lives for an hour.
        let age = ["/run/netns", "/var/run/netns"].iter().find_map(|dir| {
            fs::metadata(PathBuf::from(dir).join(name))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
        });
        let old = age.is_some_and(|a| a > STALE_AFTER);
        if old && !PathBuf::from(format!("/proc/{pid}")).exists() {
            eprintln!("[netns] removing namespace {name} left over by dead process {pid}");
            let _ = try_ip(&["netns", "del", name]);
            let _ = fs::remove_dir_all(PathBuf::from(NETNS_ETC).join(name));
        }
    }
}

/// Writes `text` into the existing file at `path` (or a new one), keeping its inode.
fn write_in_place(path: &std::path::Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `ip args...`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("{e}");
    }
}

fn try_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_with_stdin(argv: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
