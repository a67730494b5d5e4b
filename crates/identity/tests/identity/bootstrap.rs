//! Bootstrap tokens: once only, across restarts and races; only hashes on disk;
//! and the one `Authenticator` trait over tokens and workload certificates.

use std::sync::Arc;
use std::time::Duration;

use trellis_identity::{
    AuthError, Authenticator, Authenticators, BootstrapTokens, Credential, PeerCertificates,
    WorkloadIdentity, file_mode,
};

use crate::common::{id, issue, new_ca};

const TTL: Duration = Duration::from_secs(600);

fn workload(ns: &str, sa: &str) -> WorkloadIdentity {
    WorkloadIdentity::new(ns, sa).expect("names")
}

#[test]
fn a_token_works_once_and_a_restarted_control_plane_refuses_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = BootstrapTokens::open(dir.path()).expect("open");
    let token = runner
        .mint(&workload("shop", "reviews"), TTL)
        .expect("mint");
    assert_eq!(token.secret().len(), 43);

    let control_plane = BootstrapTokens::open(dir.path()).expect("open");
    assert_eq!(
        control_plane.redeem(token.secret()).expect("first use"),
        workload("shop", "reviews")
    );
    assert!(matches!(
        control_plane.redeem(token.secret()),
        Err(AuthError::TokenAlreadyUsed)
    ));
    // A restart: a new store over the same directory.
    drop(control_plane);
    let restarted = BootstrapTokens::open(dir.path()).expect("reopen");
    assert!(matches!(
        restarted.redeem(token.secret()),
        Err(AuthError::TokenAlreadyUsed)
    ));
}

#[test]
fn unknown_malformed_and_expired_tokens_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BootstrapTokens::open(dir.path()).expect("open");
    let minted = store.mint(&workload("shop", "web"), TTL).expect("mint");
    let mut forged = minted.secret().to_string();
    let flipped = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(42.., flipped);
    for bad in [forged.as_str(), "", "../../etc/passwd", &"a".repeat(43)] {
        assert!(
            matches!(store.redeem(bad), Err(AuthError::UnknownToken)),
            "{bad:?}"
        );
    }
    let expired = store
        .mint(&workload("shop", "web"), Duration::ZERO)
        .expect("mint");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(matches!(
        store.redeem(expired.secret()),
        Err(AuthError::TokenExpired)
    ));
    assert_eq!(store.prune().expect("prune"), 1);
    assert!(matches!(
        store.redeem(expired.secret()),
        Err(AuthError::UnknownToken)
    ));
    store
        .redeem(minted.secret())
        .expect("the live token survives pruning");
}

#[test]
fn only_hashes_are_stored_in_private_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("bootstrap");
    let store = BootstrapTokens::open(&root).expect("open");
    let token = store.mint(&workload("shop", "web"), TTL).expect("mint");
    store.redeem(token.secret()).expect("redeem");
    assert_eq!(file_mode(&root).expect("dir"), 0o700);
    let mut files = 0;
    for sub in ["issued", "used"] {
        assert_eq!(file_mode(&root.join(sub)).expect("dir"), 0o700);
        for entry in std::fs::read_dir(root.join(sub)).expect("list") {
            let path = entry.expect("entry").path();
            files += 1;
            assert_eq!(file_mode(&path).expect("mode"), 0o600, "{}", path.display());
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(!text.contains(token.secret()));
            assert!(!path.to_string_lossy().contains(token.secret()));
        }
    }
    assert_eq!(files, 2);
}

#[test]
fn racing_redemptions_let_exactly_one_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BootstrapTokens::open(dir.path()).expect("open");
    let token = store.mint(&workload("shop", "web"), TTL).expect("mint");
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = BootstrapTokens::open(dir.path()).expect("open");
                let secret = token.secret().to_string();
                s.spawn(move || store.redeem(&secret).is_ok())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().expect("thread")))
            .sum()
    });
    assert_eq!(wins, 1);
}

#[test]
fn concurrent_minting_loses_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = BootstrapTokens::open(dir.path()).expect("open");
                s.spawn(move || {
                    (0..10)
                        .map(|j| {
                            store
                                .mint(&workload("shop", &format!("sa-{i}-{j}")), TTL)
                                .expect("mint")
                                .secret()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let store = BootstrapTokens::open(dir.path()).expect("open");
    for token in &tokens {
        store.redeem(token).expect("every minted token is there");
    }
    assert_eq!(tokens.len(), 80);
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BootstrapTokens::open(dir.path()).expect("open");
    let token = store.mint(&workload("shop", "web"), TTL).expect("mint");
    let credential = token.credential();
    let shown = format!("{token:?} {credential:?} {store:?}");
    assert!(!shown.contains(token.secret()), "{shown}");
    store.redeem(token.secret()).expect("first");
    let err = store.redeem(token.secret()).expect_err("second");
    assert!(!format!("{err} {err:?}").contains(token.secret()));
}

#[tokio::test]
async fn one_trait_for_tokens_and_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = BootstrapTokens::open(dir.path()).expect("open");
    let token = tokens.mint(&workload("shop", "web"), TTL).expect("mint");
    let authenticators = Authenticators::new()
        .with(Arc::new(PeerCertificates::new("cluster.local")))
        .with(Arc::new(tokens));
    let by_token = authenticators
        .authenticate(&token.credential())
        .await
        .expect("token");
    assert_eq!(by_token, workload("shop", "web"));
    assert!(matches!(
        authenticators.authenticate(&token.credential()).await,
        Err(AuthError::TokenAlreadyUsed)
    ));

    let (_ca_dir, ca) = new_ca();
    let creds = issue(&ca, &id("shop", "reviews"), Duration::from_secs(600));
    let by_cert = authenticators
        .authenticate(&Credential::VerifiedPeer(creds.chain().to_vec()))
        .await
        .expect("certificate");
    assert_eq!(by_cert, workload("shop", "reviews"));

    let other_domain = PeerCertificates::new("other.domain");
    assert!(matches!(
        other_domain
            .authenticate(&Credential::VerifiedPeer(creds.chain().to_vec()))
            .await,
        Err(AuthError::Certificate(_))
    ));
    assert!(matches!(
        authenticators
            .authenticate(&Credential::ServiceAccountToken("jwt".into()))
            .await,
        Err(AuthError::Unsupported(_))
    ));
}
