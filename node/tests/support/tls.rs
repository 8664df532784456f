//! Certificates for TLS tests: a CA per test ([`TestPki`]), node certificates for given hosts
//! (IP addresses or DNS names), client certificates, and the client-side configurations that
//! use them (the client library's, and a raw tonic connector for forged peer traffic).
//!
//! Made with rcgen, as `kvctl certs` makes them: node certificates are for both server and client
//! use (a node presents the same one when serving and when dialing peers).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raftkv_client::tls::TlsConfig;
use raftkv_proto::tls::{Connector, Identity, client_config, read_roots};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Channel, Endpoint};

/// A CA in a directory, and the certificates it issued there.
pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and key written as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named `name` with `ca.crt` in `dir` (created).
    pub fn new(dir: &Path, name: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raftkv test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for(&mut params, 1);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.crt"), cert.pem()).expect("write ca.crt");
        TestPki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A node certificate for `hosts`, written as `<file>.crt`/`<file>.key` (replacing what is
    /// there: a rotation). Valid for `days` days from a day ago.
    pub fn issue_node(&self, file: &str, hosts: &[String], days: i64) -> CertFiles {
        self.issue(
            file,
            hosts,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            days,
        )
    }

    /// A client certificate (no names), written as `<file>.crt`/`<file>.key`.
    pub fn issue_client(&self, file: &str) -> CertFiles {
        self.issue(file, &[], vec![ExtendedKeyUsagePurpose::ClientAuth], 1)
    }

    fn issue(
        &self,
        file: &str,
        hosts: &[String],
        usages: Vec<ExtendedKeyUsagePurpose>,
        days: i64,
    ) -> CertFiles {
        let mut params = CertificateParams::new(hosts.to_vec()).expect("certificate names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, file);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        valid_for(&mut params, days);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        // Written to temporary names and renamed, as a Secret update swaps files whole: a node
        // polling for changes never reads a half-written pair as the new one.
        let tmp_cert = self.dir.join(format!(".{file}.crt.tmp"));
        let tmp_key = self.dir.join(format!(".{file}.key.tmp"));
        std::fs::write(&tmp_cert, cert.pem()).expect("write certificate");
        std::fs::write(&tmp_key, key.serialize_pem()).expect("write key");
        std::fs::rename(&tmp_key, &files.key).expect("install key");
        std::fs::rename(&tmp_cert, &files.cert).expect("install certificate");
        files
    }

    /// The client library's TLS: trusts this CA, presents `identity` if given.
    pub fn client_tls(&self, identity: Option<&CertFiles>) -> TlsConfig {
        TlsConfig::from_files(
            &self.ca(),
            identity.map(|c| (c.cert.as_path(), c.key.as_path())),
        )
        .expect("client TLS configuration")
    }

    /// A raw connector trusting this CA and presenting `identity`: what a forger with a
    /// certificate (of this CA or another) would dial a peer port with.
    pub fn connector(&self, identity: Option<&CertFiles>) -> Connector {
        let roots = read_roots(&self.ca()).expect("CA");
        let identity = identity.map(|c| Identity::load(&c.cert, &c.key).expect("identity"));
        Connector::fixed(Arc::new(
            client_config(roots, identity).expect("client config"),
        ))
    }
}

/// A channel to `addr` (`host:port`) through `connector`.
pub fn tls_channel(addr: &str, connector: Connector) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector)
}

fn valid_for(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}
