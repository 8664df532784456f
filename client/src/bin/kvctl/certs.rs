//! `kvctl certs`: a CA and certificates for a local cluster with TLS on both ports (rcgen, ring).
//!
//! Files in `--dir`: `ca.crt`/`ca.key` (reused when present), `node-<id>.crt`/`.key` for each
//! node (SANs = its hosts; both server and client use, since a node presents the same certificate
//! when it serves its peer port and when it dials its peers), and `client.crt`/`client.key` for
//! kvctl and other clients (client use only). Keys are ECDSA P-256, written with mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::cli::CertsArgs;
use crate::exit::{Exit, Failure};
use crate::output::Output;

/// The CA's subject: fixed, plus a digest of its public key, so that a CA read back from `ca.key`
/// issues under the same name, while two CAs never share one (a verifier that finds the issuer
/// by name would otherwise report a bad signature rather than an unknown CA).
fn ca_name(key: &KeyPair) -> String {
    let digest = key
        .public_key_raw()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("raftkv local CA {digest:016x}")
}

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> Failure + '_ {
    move |e| Failure::Other(format!("{what}: {e}"))
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::Other(format!("cannot write {}: {e}", path.display()));
    std::fs::write(path, contents).map_err(fail)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}

fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ca_name(key));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The validity window: from a day ago (clock skew between machines) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// The CA in `dir`, or a new one written there.
fn ca(dir: &Path, days: u32) -> Result<(Issuer<'static, KeyPair>, bool), Failure> {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt.exists() && key.exists() {
        let pem = std::fs::read_to_string(&key)
            .map_err(|e| Failure::Other(format!("cannot read {}: {e}", key.display())))?;
        let key_pair = KeyPair::from_pem(&pem).map_err(failed("ca.key"))?;
        return Ok((Issuer::new(ca_params(&key_pair), key_pair), false));
    }
    let key_pair = KeyPair::generate().map_err(failed("generating the CA key"))?;
    let mut params = ca_params(&key_pair);
    // The CA outlives the certificates it issues, so renewing them needs no new CA.
    validity(&mut params, days.saturating_mul(10));
    let cert = params.self_signed(&key_pair).map_err(failed("the CA"))?;
    write(&crt, &cert.pem(), false)?;
    write(&key, &key_pair.serialize_pem(), true)?;
    Ok((Issuer::new(params, key_pair), true))
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    hosts: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
    path: &Path,
) -> Result<(PathBuf, PathBuf), Failure> {
    let mut params = CertificateParams::new(hosts).map_err(failed(name))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key_pair = KeyPair::generate().map_err(failed(name))?;
    let cert = params.signed_by(&key_pair, issuer).map_err(failed(name))?;
    let (crt, key) = (path.with_extension("crt"), path.with_extension("key"));
    write(&crt, &cert.pem(), false)?;
    write(&key, &key_pair.serialize_pem(), true)?;
    Ok((crt, key))
}

/// What [`generate`] wrote.
pub struct Generated {
    /// Whether the CA is new (or was reused from the directory).
    pub new_ca: bool,
    /// The node certificates, in the order asked for.
    pub nodes: Vec<PathBuf>,
    /// The client certificate and key.
    pub client: (PathBuf, PathBuf),
}

/// Hosts of a node on this machine: what `kvctl local up` and a bare `kvctl certs` use.
pub fn localhost() -> Vec<String> {
    vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
}

/// Writes (or reuses) the CA in `dir`, a certificate per node for its hosts, and a client one.
pub fn generate(dir: &Path, nodes: &[(u64, Vec<String>)], days: u32) -> Result<Generated, Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Other(format!("cannot create {}: {e}", dir.display())))?;
    let (issuer, new_ca) = ca(dir, days)?;
    let both = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut written = Vec::new();
    for (id, hosts) in nodes {
        let (crt, _) = issue(
            &issuer,
            &format!("raftkv node {id}"),
            hosts.clone(),
            both.clone(),
            days,
            &dir.join(format!("node-{id}")),
        )?;
        written.push(crt);
    }
    let client = issue(
        &issuer,
        "raftkv client",
        Vec::new(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        days,
        &dir.join("client"),
    )?;
    Ok(Generated {
        new_ca,
        nodes: written,
        client,
    })
}

/// Runs `kvctl certs`.
pub fn run(args: CertsArgs, out: &Output) -> Result<Exit, Failure> {
    let nodes = if args.nodes.is_empty() {
        (1..=3).map(|id| (id, localhost())).collect()
    } else {
        args.nodes
    };
    let Generated {
        new_ca,
        nodes: written,
        client: (client_crt, client_key),
    } = generate(&args.dir, &nodes, args.days)?;
    let ca = args.dir.join("ca.crt");
    let d = args.dir.display();
    out.result(
        || {
            let mut text = format!(
                "{} CA {}; node certificates: {}\n",
                if new_ca { "made" } else { "reused" },
                ca.display(),
                nodes.iter().map(|(id, h)| format!("{id} ({})", h.join(","))).collect::<Vec<_>>().join(", ")
            );
            text.push_str(&format!(
                "kvnode flags for node N:\n  --peer-cert {d}/node-N.crt --peer-key {d}/node-N.key --peer-ca {d}/ca.crt\n  --client-cert {d}/node-N.crt --client-key {d}/node-N.key [--client-ca {d}/ca.crt]\n"
            ));
            text.push_str(&format!(
                "kvctl:\n  export RAFTKV_CACERT={d}/ca.crt RAFTKV_CERT={} RAFTKV_KEY={}",
                client_crt.display(),
                client_key.display()
            ));
            text
        },
        || {
            json!({
                "ca": ca.display().to_string(),
                "new_ca": new_ca,
                "nodes": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "client_cert": client_crt.display().to_string(),
                "client_key": client_key.display().to_string(),
            })
        },
    );
    Ok(Exit::Success)
}
