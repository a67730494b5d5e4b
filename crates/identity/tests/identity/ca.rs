//! The CA: kept across restarts, private files, Istio's plugged-in layout checked
//! file by file, and a CSR's own names never copied.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use trellis_identity::{Ca, CaError, Trust, cert, file_mode};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::common::{assert_no_key, id, new_ca};

const HOUR: Duration = Duration::from_secs(3600);

fn csr_asking_for(key: &KeyPair, sans: Vec<rcgen::SanType>, is_ca: bool) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(rcgen::string::Ia5String::try_from(s).expect("ia5"))
}

#[test]
fn restarted_ca_signs_certificates_that_chain_to_the_same_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("first start");
    let second = Ca::load_or_create(&dir.path().join("ca"), "cluster.local").expect("restart");
    assert_eq!(first.root_pem(), second.root_pem());
    let trust = Trust::from_pem("cluster.local", &first.root_pem()).expect("trust");
    let key = KeyPair::generate().expect("key");
    let issued = second
        .sign(
            csr_asking_for(&key, vec![], false).as_bytes(),
            &id("shop", "web"),
            HOUR,
        )
        .expect("signed");
    let chain = cert::certs_from_pem(&issued.chain_pem).expect("chain");
    trust
        .verify_chain(&chain)
        .expect("chains to the first start's root");
}

#[test]
fn ca_files_and_directory_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("state").join("ca");
    Ca::load_or_create(&ca_dir, "cluster.local").expect("ca");
    assert_eq!(file_mode(&ca_dir.join("ca-key.pem")).expect("key"), 0o600);
    assert_eq!(file_mode(&ca_dir.join("ca-cert.pem")).expect("cert"), 0o600);
    assert_eq!(file_mode(&ca_dir).expect("dir"), 0o700);
}

#[test]
fn a_key_left_without_its_certificate_gets_a_certificate_a_lone_certificate_is_an_error() {
    let (dir, ca) = new_ca();
    let ca_dir = dir.path().join("ca");
    let key_before = std::fs::read_to_string(ca_dir.join("ca-key.pem")).expect("key");
    drop(ca);
    std::fs::remove_file(ca_dir.join("ca-cert.pem")).expect("rm cert");
    Ca::load_or_create(&ca_dir, "cluster.local").expect("the certificate is made again");
    let key_after = std::fs::read_to_string(ca_dir.join("ca-key.pem")).expect("key");
    assert_eq!(key_before, key_after, "the same key is kept");

    std::fs::remove_file(ca_dir.join("ca-key.pem")).expect("rm key");
    let err = Ca::load_or_create(&ca_dir, "cluster.local").expect_err("no key");
    assert!(matches!(err, CaError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
}

#[test]
fn a_csr_asking_for_another_service_account_gets_the_callers_identity_only() {
    let (_dir, ca) = new_ca();
    let key = KeyPair::generate().expect("key");
    let csr = csr_asking_for(
        &key,
        vec![
            uri("spiffe://cluster.local/ns/production/sa/admin"),
            rcgen::SanType::DnsName("admin.example.com".try_into().expect("dns")),
            rcgen::SanType::IpAddress("10.0.0.1".parse().expect("ip")),
        ],
        true,
    );
    let caller = id("production", "frontend");
    let issued = ca.sign(csr.as_bytes(), &caller, HOUR).expect("signed");
    assert_eq!(issued.identity, caller);
    let chain = cert::certs_from_pem(&issued.chain_pem).expect("chain");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("x509");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .expect("san ok")
        .expect("has a SAN")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        ["URI:spiffe://cluster.local/ns/production/sa/frontend"]
    );
    assert!(!leaf.is_ca(), "CA:TRUE was asked for and not granted");
    assert_eq!(
        leaf.subject().iter_attributes().count(),
        0,
        "no subject copied"
    );
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let ku = leaf.key_usage().expect("ku").expect("present").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    // The certificate is for the CSR's key.
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    // Not before is backdated for clock skew; the serial is random.
    let not_before = leaf.validity().not_before.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(now - not_before >= 60, "backdated");
    let again = ca.sign(csr.as_bytes(), &caller, HOUR).expect("signed");
    assert_ne!(issued.serial, again.serial);
    assert!(issued.serial.len() >= 16);
}

#[test]
fn a_csr_with_a_broken_signature_or_of_another_trust_domain_is_refused() {
    let (_dir, ca) = new_ca();
    let key = KeyPair::generate().expect("key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr");
    let mut der = csr.der().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let err = ca
        .sign(&der, &id("shop", "web"), HOUR)
        .expect_err("tampered");
    assert!(matches!(err, CaError::Csr(_)), "{err}");
    assert!(matches!(
        ca.sign(b"not a csr", &id("shop", "web"), HOUR),
        Err(CaError::Csr(_))
    ));
    let other =
        trellis_identity::SpiffeId::with_trust_domain("other.td", "shop", "web").expect("id");
    assert!(matches!(
        ca.sign(csr.der(), &other, HOUR),
        Err(CaError::WrongTrustDomain { .. })
    ));
    // DER and PEM both work.
    ca.sign(csr.der(), &id("shop", "web"), HOUR).expect("der");
}

#[test]
fn the_control_planes_serving_certificate_names_its_hosts_and_identity() {
    let (_dir, ca) = new_ca();
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let creds = ca
        .sign_server(
            &["trellis-control-plane.istio-system.svc".into()],
            &[ip],
            HOUR,
        )
        .expect("server creds");
    assert_eq!(
        creds.identity().to_string(),
        "spiffe://cluster.local/ns/istio-system/sa/trellis-control-plane"
    );
    let (_, leaf) = X509Certificate::from_der(&creds.chain()[0]).expect("x509");
    let names = &leaf
        .subject_alternative_name()
        .expect("ok")
        .expect("san")
        .value
        .general_names;
    assert!(names.contains(&GeneralName::DNSName(
        "trellis-control-plane.istio-system.svc"
    )));
    assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
}

#[test]
fn the_ca_key_is_in_no_debug_output_or_error() {
    let (dir, ca) = new_ca();
    let key_pem = std::fs::read_to_string(dir.path().join("ca/ca-key.pem")).expect("key");
    assert!(key_pem.contains("PRIVATE KEY"));
    assert_no_key(&format!("{ca:?} {ca:#?}"), Some(&key_pem));
    let errors = [
        ca.sign(b"junk", &id("a", "b"), HOUR)
            .expect_err("junk")
            .to_string(),
        Ca::from_plugged(dir.path(), "cluster.local")
            .expect_err("no files")
            .to_string(),
    ];
    for e in errors {
        assert_no_key(&e, Some(&key_pem));
    }
}

/// An Istio-style `cacerts` directory: a root, an intermediate signed by it.
struct Plugged {
    dir: tempfile::TempDir,
    root_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn plugged() -> Plugged {
    let dir = tempfile::tempdir().expect("tempdir");
    let root_key = KeyPair::generate().expect("root key");
    let root = ca_params("Root CA").self_signed(&root_key).expect("root");
    let inter_key = KeyPair::generate().expect("key");
    let issuer = Issuer::new(ca_params("Root CA"), &root_key);
    let inter = ca_params("Intermediate CA")
        .signed_by(&inter_key, &issuer)
        .expect("intermediate");
    let write =
        |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
    write("ca-cert.pem", inter.pem());
    write("ca-key.pem", inter_key.serialize_pem());
    write("root-cert.pem", root.pem());
    write("cert-chain.pem", inter.pem() + &root.pem());
    Plugged {
        root_pem: root.pem(),
        dir,
    }
}

#[test]
fn a_plugged_in_ca_signs_chains_through_its_intermediate() {
    let p = plugged();
    let ca = Ca::from_plugged(p.dir.path(), "cluster.local").expect("plugged");
    assert_eq!(
        cert::certs_from_pem(&ca.root_pem()).expect("roots"),
        cert::certs_from_pem(&p.root_pem).expect("root")
    );
    let key = KeyPair::generate().expect("key");
    let issued = ca
        .sign(
            csr_asking_for(&key, vec![], false).as_bytes(),
            &id("shop", "web"),
            HOUR,
        )
        .expect("signed");
    let chain = cert::certs_from_pem(&issued.chain_pem).expect("chain");
    assert_eq!(chain.len(), 2, "leaf and intermediate, not the root");
    let trust = Trust::from_pem("cluster.local", &issued.root_pem).expect("trust");
    trust.verify_chain(&chain).expect("verifies");
    trust
        .verify_chain(&chain[..1])
        .expect_err("the intermediate is needed");
}

fn assert_names(err: &CaError, file: &str) {
    assert!(err.to_string().contains(file), "{err} should name {file}");
}

#[test]
fn a_plugged_in_ca_whose_key_does_not_match_is_refused() {
    let p = plugged();
    let other = KeyPair::generate().expect("key");
    std::fs::write(p.dir.path().join("ca-key.pem"), other.serialize_pem()).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("mismatch");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert_names(&err, "ca-key.pem");
    assert_names(&err, "ca-cert.pem");
    assert_no_key(&format!("{err} {err:?}"), Some(&other.serialize_pem()));
}

#[test]
fn a_plugged_in_chain_that_does_not_chain_is_refused_naming_the_file() {
    let p = plugged();
    let stranger = ca_params("Stranger")
        .self_signed(&KeyPair::generate().expect("k"))
        .expect("c");
    let inter = std::fs::read_to_string(p.dir.path().join("ca-cert.pem")).expect("read");
    let path = |name: &str| p.dir.path().join(name);

    std::fs::write(path("cert-chain.pem"), inter.clone() + &stranger.pem()).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("broken chain");
    assert!(matches!(err, CaError::Chain { .. }), "{err}");
    assert_names(&err, "cert-chain.pem");

    std::fs::write(path("cert-chain.pem"), inter.clone()).expect("write");
    std::fs::write(path("root-cert.pem"), stranger.pem()).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("wrong root");
    assert!(err.to_string().contains("root-cert.pem"), "{err}");

    std::fs::write(path("cert-chain.pem"), stranger.pem()).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("wrong start");
    assert_names(&err, "cert-chain.pem");

    std::fs::remove_file(path("root-cert.pem")).expect("rm");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("missing");
    assert_names(&err, "root-cert.pem");
}

#[test]
fn a_plugged_in_leaf_certificate_as_ca_cert_is_refused() {
    let p = plugged();
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::default()
        .self_signed(&key)
        .expect("leaf");
    std::fs::write(p.dir.path().join("ca-cert.pem"), leaf.pem()).expect("write");
    std::fs::write(p.dir.path().join("ca-key.pem"), key.serialize_pem()).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("not a CA");
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
}

#[test]
fn an_unreadable_key_file_is_named_and_not_quoted() {
    let p = plugged();
    let junk = "-----BEGIN PRIVATE KEY-----\nTUlJQ2VRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NBbU13Z2dKZkFnRUFBb0dCQUxz\n-----END PRIVATE KEY-----\n";
    std::fs::write(p.dir.path().join("ca-key.pem"), junk).expect("write");
    let err = Ca::from_plugged(p.dir.path(), "cluster.local").expect_err("junk key");
    assert_names(&err, "ca-key.pem");
    assert_no_key(&format!("{err} {err:?}"), Some(junk));
}
