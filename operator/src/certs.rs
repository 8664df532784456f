//! The certificates of `spec.tls.*.auto`: a CA per cluster, a certificate per pod, one for the
//! operator itself, and the pure decisions of when each is made again.
//!
//! No client, no Secrets here: [`crate::autotls`] reads and writes those. Times are Unix seconds
//! passed in by the caller, so that every decision is a pure function of its inputs and the
//! tests walk a certificate's whole life in a table. Keys are ECDSA P-256 (rcgen's default,
//! signed with ring; never aws-lc-rs).
//!
//! **Lifetimes.** A CA lives [`CA_LIFETIME`] (one year), a leaf [`LEAF_LIFETIME`] (90 days).
//! Anything is made again once less than a third of its lifetime is left ([`Validity::renew_at`]):
//! a month of slack for a leaf, four months for a CA, so a stopped operator has time to come
//! back before anything expires.
//!
//! **CA rotation with overlap.** Pods read their Secret through the kubelet, which refreshes a
//! mounted Secret on its own schedule (about a minute, pod by pod): a leaf signed by a CA that a
//! peer does not trust yet would be refused. So a new CA is introduced in two steps:
//!
//! 1. it joins the trust bundle (`ca.crt` = new CA + previous CA) while leaves are still signed
//!    by the previous CA, for [`PROPAGATION`] (ten minutes, ten times the kubelet's refresh);
//! 2. then it signs; leaves move to it as they come up for renewal (or at once if they no longer
//!    verify).
//!
//! The previous CA stays in the bundle until it expires, so every leaf it signed keeps verifying:
//! a leaf never outlives its issuer ([`issue`] clamps), and a CA signs only while a whole
//! [`LEAF_LIFETIME`] of its own life is left (it is rotated four months before expiry, so the
//! ten minutes of step 1 are well inside that).

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

/// One day in seconds.
pub const DAY: i64 = 86_400;
/// How long a CA the operator makes is valid.
pub const CA_LIFETIME: i64 = 365 * DAY;
/// How long a pod's (or the operator's) certificate is valid.
pub const LEAF_LIFETIME: i64 = 90 * DAY;
/// How far back `notBefore` is set, so that a node whose clock is a little behind the
/// operator's accepts a certificate made this second.
pub const BACKDATE: i64 = 5 * 60;
/// How long a new CA is only trusted before it signs anything: the time every pod needs to see
/// the new trust bundle in its mounted Secret (the kubelet refreshes about every minute).
pub const PROPAGATION: i64 = 10 * 60;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen could not make or sign a certificate, or parse a stored CA.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A stored certificate is not a PEM X.509 certificate.
    #[error("not a PEM X.509 certificate")]
    Parse,
    /// A time outside what a certificate can carry.
    #[error("time {0} is out of range for a certificate")]
    Time(i64),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for KeyedCert {
    // Never print a private key into a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// When a certificate is valid, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: i64,
    /// `notAfter`.
    pub not_after: i64,
}

impl Validity {
    /// When the certificate is made again: once less than a third of its lifetime is left.
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before) / 3
    }

    /// Whether it is time to make it again.
    pub fn renewal_due(&self, now: i64) -> bool {
        now >= self.renew_at()
    }

    /// Whether it has expired.
    pub fn expired(&self, now: i64) -> bool {
        now >= self.not_after
    }

    /// Whether a whole leaf lifetime is left: a CA signs only then, so that what it signs is not
    /// cut short by its own expiry.
    pub fn has_room_for_a_leaf(&self, now: i64) -> bool {
        now + LEAF_LIFETIME <= self.not_after
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A pod: serves both ports and dials its peers (server and client authentication).
    Member,
    /// The operator: a client only.
    Client,
}

fn timestamp(secs: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CertError::Time(secs))
}

/// Makes a self-signed CA named `label` (e.g. `ns/demo`), valid from `now` for
/// [`CA_LIFETIME`]. Its name carries its creation time, so that the two CAs of an overlap are
/// told apart in `openssl x509 -text` and in logs.
pub fn new_ca(label: &str, now: i64) -> Result<KeyedCert, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "raftkv");
    dn.push(DnType::CommonName, format!("raftkv CA {label} {now}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = timestamp(now - BACKDATE)?;
    params.not_after = timestamp(now + CA_LIFETIME)?;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a leaf for `names` (DNS names; the first is also the common name) signed by `ca`,
/// valid from `now` for [`LEAF_LIFETIME`] but never beyond the CA's own expiry.
pub fn issue(
    ca: &KeyedCert,
    common_name: &str,
    names: &[String],
    usage: Usage,
    now: i64,
) -> Result<KeyedCert, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let ca_validity = validity(&ca.cert_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "raftkv");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        Usage::Member => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = timestamp(now - BACKDATE)?;
    params.not_after = timestamp((now + LEAF_LIFETIME).min(ca_validity.not_after))?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn der(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| CertError::Parse)
}

/// The validity of the first certificate in `pem`.
pub fn validity(pem: &str) -> Result<Validity, CertError> {
    let der = der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| CertError::Parse)?;
    let v = cert.validity();
    Ok(Validity {
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

/// Why a stored leaf cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafProblem {
    /// Not a certificate, or no key beside it.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// It does not chain to a trusted CA at this time (expired, or a CA no longer trusted), or
    /// is not valid for its use.
    #[error("does not verify: {0}")]
    Untrusted(String),
    /// It does not name one of the names it must carry.
    #[error("does not name {0}")]
    Name(String),
}

/// Checks a stored leaf as its peers will: it chains to one of `trust` (PEM CAs) at `now` for
/// its `usage`, and names every one of `names`. The key must parse too.
pub fn verify_leaf(
    leaf: &KeyedCert,
    trust: &[&str],
    names: &[String],
    usage: Usage,
    now: i64,
) -> Result<(), LeafProblem> {
    KeyPair::from_pem(&leaf.key_pem).map_err(|e| LeafProblem::Unreadable(e.to_string()))?;
    let leaf_der = der(&leaf.cert_pem).map_err(|e| LeafProblem::Unreadable(e.to_string()))?;
    let ca_ders = trust
        .iter()
        .map(|pem| der(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LeafProblem::Untrusted(format!("trust bundle: {e}")))?;
    let anchors = ca_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LeafProblem::Untrusted(format!("trust bundle: {e}")))?;
    let cert = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| LeafProblem::Unreadable(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    let usages = match usage {
        Usage::Member => vec![
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ],
        Usage::Client => vec![webpki::KeyUsage::client_auth()],
    };
    for u in usages {
        cert.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &anchors,
            &[],
            time,
            u,
            None,
            None,
        )
        .map_err(|e| LeafProblem::Untrusted(e.to_string()))?;
    }
    for name in names {
        let server_name =
            ServerName::try_from(name.as_str()).map_err(|_| LeafProblem::Name(name.clone()))?;
        cert.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| LeafProblem::Name(name.clone()))?;
    }
    Ok(())
}

/// What to do with the cluster's CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CaDecision {
    /// It is good for a while yet.
    Keep,
    /// Less than a third of its life is left: make a new one, and keep this one trusted (and
    /// signing, for [`PROPAGATION`]) as the previous CA.
    Rotate,
    /// None, unreadable or expired: make a new one and start over (an expired CA cannot help
    /// an overlap: nothing it signed verifies any more).
    Create,
}

/// The CA decision for the current CA's validity (`None`: missing or unreadable).
pub fn ca_decision(current: Option<Validity>, now: i64) -> CaDecision {
    match current {
        None => CaDecision::Create,
        Some(v) if v.expired(now) => CaDecision::Create,
        Some(v) if v.renewal_due(now) => CaDecision::Rotate,
        Some(_) => CaDecision::Keep,
    }
}

/// Which CA signs new leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Signer {
    /// The current CA.
    Current,
    /// The previous CA: the current one is too new for every pod to trust it yet.
    Previous,
}

/// Which CA signs now: the current one once it has been in the trust bundle for
/// [`PROPAGATION`], else the previous one while it is still valid.
pub fn signer(current: Validity, previous: Option<Validity>, now: i64) -> Signer {
    let introduced = current.not_before + BACKDATE;
    match previous {
        Some(p) if now < introduced + PROPAGATION && p.has_room_for_a_leaf(now) => Signer::Previous,
        _ => Signer::Current,
    }
}

/// Whether the previous CA stays in the trust bundle: until it expires.
pub fn keep_previous(previous: Option<Validity>, now: i64) -> bool {
    previous.is_some_and(|p| !p.expired(now))
}

/// What to do with one stored leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LeafDecision {
    /// It verifies and has more than a third of its life left.
    Keep,
    /// Make it again, for this reason.
    Issue(String),
}

/// The decision for a leaf: `checked` is [`verify_leaf`]'s answer (`None`: there is no leaf),
/// `validity` its validity when readable.
pub fn leaf_decision(
    checked: Option<Result<(), LeafProblem>>,
    validity: Option<Validity>,
    now: i64,
) -> LeafDecision {
    match (checked, validity) {
        (None, _) => LeafDecision::Issue("new".into()),
        (Some(Err(problem)), _) => LeafDecision::Issue(problem.to_string()),
        (Some(Ok(())), None) => LeafDecision::Issue("unreadable validity".into()),
        (Some(Ok(())), Some(v)) if v.renewal_due(now) => {
            LeafDecision::Issue("less than a third of its lifetime left".into())
        }
        (Some(Ok(())), Some(_)) => LeafDecision::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec![
            "demo-1.demo-peers.ns.svc.cluster.local".into(),
            "demo-1.demo-peers.ns.svc".into(),
            "demo-1.demo-peers".into(),
        ]
    }

    #[test]
    fn a_member_leaf_chains_to_its_ca_names_the_pod_and_is_valid_90_days() {
        let ca = new_ca("ns/demo", NOW).expect("CA");
        let leaf = issue(&ca, "demo-1", &names(), Usage::Member, NOW).expect("leaf");
        assert_eq!(
            validity(&leaf.cert_pem).expect("validity"),
            Validity {
                not_before: NOW - BACKDATE,
                not_after: NOW + LEAF_LIFETIME
            }
        );
        assert_eq!(
            validity(&ca.cert_pem).expect("validity"),
            Validity {
                not_before: NOW - BACKDATE,
                not_after: NOW + CA_LIFETIME
            }
        );
        let trust = [ca.cert_pem.as_str()];
        assert_eq!(
            verify_leaf(&leaf, &trust, &names(), Usage::Member, NOW),
            Ok(())
        );
        // Another member's name is not in it: member 1 cannot speak as member 2.
        let other = vec!["demo-2.demo-peers.ns.svc.cluster.local".to_string()];
        assert_eq!(
            verify_leaf(&leaf, &trust, &other, Usage::Member, NOW),
            Err(LeafProblem::Name(other[0].clone()))
        );
        // Another CA does not vouch for it.
        let stranger = new_ca("ns/other", NOW).expect("CA");
        assert!(matches!(
            verify_leaf(&leaf, &[&stranger.cert_pem], &names(), Usage::Member, NOW),
            Err(LeafProblem::Untrusted(_))
        ));
        // Not before its start (minus the backdating), not after its end.
        assert!(matches!(
            verify_leaf(
                &leaf,
                &trust,
                &names(),
                Usage::Member,
                NOW + LEAF_LIFETIME + 1
            ),
            Err(LeafProblem::Untrusted(_))
        ));
        assert!(matches!(
            verify_leaf(&leaf, &trust, &names(), Usage::Member, NOW - BACKDATE - 1),
            Err(LeafProblem::Untrusted(_))
        ));
    }

    #[test]
    fn the_operators_leaf_is_a_client_only() {
        let ca = new_ca("ns/demo", NOW).expect("CA");
        let op = issue(&ca, "raftkv-operator", &[], Usage::Client, NOW).expect("leaf");
        let trust = [ca.cert_pem.as_str()];
        assert_eq!(verify_leaf(&op, &trust, &[], Usage::Client, NOW), Ok(()));
        // It cannot serve a port.
        assert!(matches!(
            verify_leaf(&op, &trust, &[], Usage::Member, NOW),
            Err(LeafProblem::Untrusted(_))
        ));
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let ca = new_ca("ns/demo", NOW).expect("CA");
        let late = NOW + CA_LIFETIME - 10 * DAY;
        let leaf = issue(&ca, "demo-0", &names(), Usage::Member, late).expect("leaf");
        assert_eq!(
            validity(&leaf.cert_pem).expect("validity").not_after,
            NOW + CA_LIFETIME
        );
    }

    #[test]
    fn garbage_is_unreadable_not_a_panic() {
        assert!(matches!(validity("not a cert"), Err(CertError::Parse)));
        let junk = KeyedCert {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "nope".into(),
        };
        assert!(matches!(
            verify_leaf(&junk, &[], &[], Usage::Member, NOW),
            Err(LeafProblem::Unreadable(_))
        ));
        let ca = new_ca("ns/demo", NOW).expect("CA");
        let bad_ca = KeyedCert {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "nope".into(),
        };
        assert!(issue(&bad_ca, "x", &[], Usage::Client, NOW).is_err());
    }

    #[test]
    fn renewal_decisions() {
        let v = |not_before, not_after| Validity {
            not_before,
            not_after,
        };
        // (validity, now, CA decision)
        let ca_table = [
            (None, 0, CaDecision::Create),
            (Some(v(0, 300)), 0, CaDecision::Keep),
            (Some(v(0, 300)), 199, CaDecision::Keep),
            (Some(v(0, 300)), 200, CaDecision::Rotate),
            (Some(v(0, 300)), 299, CaDecision::Rotate),
            (Some(v(0, 300)), 300, CaDecision::Create),
            (Some(v(0, 300)), 10_000, CaDecision::Create),
        ];
        for (validity, now, want) in ca_table {
            assert_eq!(ca_decision(validity, now), want, "{validity:?} at {now}");
        }

        let good = Some(Ok(()));
        let year = v(0, CA_LIFETIME);
        // (verification, validity, now, leaf decision)
        let leaf_table = [
            (None, None, 0, LeafDecision::Issue("new".into())),
            (
                Some(Err(LeafProblem::Name("x".into()))),
                Some(year),
                0,
                LeafDecision::Issue("does not name x".into()),
            ),
            (good.clone(), Some(v(0, 90)), 59, LeafDecision::Keep),
            (
                good.clone(),
                Some(v(0, 90)),
                60,
                LeafDecision::Issue("less than a third of its lifetime left".into()),
            ),
            (
                good,
                None,
                0,
                LeafDecision::Issue("unreadable validity".into()),
            ),
        ];
        for (checked, validity, now, want) in leaf_table {
            assert_eq!(leaf_decision(checked.clone(), validity, now), want);
        }
    }

    #[test]
    fn a_new_ca_signs_only_after_it_has_propagated() {
        let current = Validity {
            not_before: NOW - BACKDATE,
            not_after: NOW + CA_LIFETIME,
        };
        // The previous CA was rotated with a third of its life (four months) left.
        let previous = Validity {
            not_before: NOW - CA_LIFETIME * 2 / 3,
            not_after: NOW + CA_LIFETIME / 3,
        };
        // (previous, now, signer)
        let table = [
            (None, NOW, Signer::Current),
            (Some(previous), NOW, Signer::Previous),
            (Some(previous), NOW + PROPAGATION - 1, Signer::Previous),
            (Some(previous), NOW + PROPAGATION, Signer::Current),
            // A previous CA too close to its end never signs.
            (
                Some(Validity {
                    not_before: previous.not_before,
                    not_after: NOW + LEAF_LIFETIME - 1,
                }),
                NOW,
                Signer::Current,
            ),
        ];
        for (prev, now, want) in table {
            assert_eq!(signer(current, prev, now), want, "{prev:?} at {now}");
        }
        assert!(keep_previous(Some(previous), previous.not_after - 1));
        assert!(!keep_previous(Some(previous), previous.not_after));
        assert!(!keep_previous(None, NOW));
    }
}
