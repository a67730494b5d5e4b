//! Cluster mode's first certificate, tried as an attacker would against the real API
//! server: a control plane whose CA authenticates CSRs by TokenReview signs, over real
//! TLS, for exactly the service account a pod's projected `istio-ca` token names — and
//! refuses a token for another audience, a bound token whose pod is gone, a token that
//! is not a service account's, a made-up token, and a token used to ask for another
//! service account's identity.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use trellis_control::proto::SignRequest;
use trellis_control::proto::mesh_config_client::MeshConfigClient;
use trellis_control::security::{SecurityOptions, tls};
use trellis_identity::{RenewalPolicy, SpiffeId, Trust};
use trellis_kube::testing::{ADMIN_TOKEN, Cluster, ClusterOptions, isolate, pod_token, token};
use trellis_kube::token_review::TokenReviewer;

#[test]
fn a_pods_token_gets_its_own_identity_and_nothing_else() {
    if !isolate("a_pods_token_gets_its_own_identity_and_nothing_else") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario());
}

fn control_plane_id() -> SpiffeId {
    SpiffeId::new("istio-system", "trellis-control-plane").expect("id")
}

fn csr(id: &SpiffeId) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    trellis_identity::manager::csr_for(id, &key).expect("csr")
}

fn bearer(csr_pem: String, token: &str) -> tonic::Request<SignRequest> {
    let mut request = tonic::Request::new(SignRequest { csr_pem });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

async fn scenario() {
    let name = "a_pods_token_gets_its_own_identity_and_nothing_else";
    let Some(cluster) = Cluster::start_with(
        name,
        ClusterOptions {
            controller_manager: false,
        },
    )
    .await
    else {
        return;
    };
    let client = cluster.client().await;
    let (ok, _, err) = cluster.kubectl_run(&["create", "namespace", "shop"], None);
    assert!(ok, "{err}");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    for sa in ["reviews", "ratings"] {
        let object: ServiceAccount = serde_json::from_value(
            serde_json::json!({"metadata": {"name": sa, "namespace": "shop"}}),
        )
        .expect("an SA");
        accounts
            .create(&PostParams::default(), &object)
            .await
            .expect("create the SA");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reviews-0", "namespace": "shop"},
        "spec": {"serviceAccountName": "reviews",
            "containers": [{"name": "app", "image": "example/reviews"}]},
    }))
    .expect("a Pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create the Pod");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut security = SecurityOptions::new(dir.path().join("security"));
    security
        .authenticators
        .push(Arc::new(TokenReviewer::new(client.clone())));
    let running = trellis_control::spawn(trellis_control::Options {
        config_dir: None,
        grpc: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        state_file: None,
        security,
    })
    .expect("a control plane");
    let address = running.grpc.to_string();
    let trust = Trust::from_pem("cluster.local", &running.security.ca.root_pem()).expect("trust");

    // The legitimate path, as a sidecar takes it: the pod's bound istio-ca token in
    // a file; the certificate names the pod's service account.
    let reviews_token = pod_token(&client, &pod, "reviews", "istio-ca")
        .await
        .expect("a pod token");
    let token_file = dir.path().join("istio-token");
    std::fs::write(&token_file, &reviews_token).expect("write the token");
    let reviews = SpiffeId::new("shop", "reviews").expect("id");
    let identity = trellis_control::security::client::ClientIdentity::with_token_file(
        &address,
        trust.clone(),
        reviews.clone(),
        token_file,
        RenewalPolicy::default(),
    );
    tokio::time::timeout(Duration::from_secs(20), identity.manager.ready())
        .await
        .expect("a certificate within 20 s");
    let current = identity.manager.ready().await;
    assert_eq!(current.identity(), &reviews);

    // Everything else is refused, over the same real TLS.
    let config =
        trellis_identity::bootstrap_client_config(trust.clone(), &[control_plane_id()], &[b"h2"])
            .expect("config");
    let mut ca = MeshConfigClient::new(tls::connect(&address, config).await.expect("connect"));
    let refused = |result: Result<tonic::Response<_>, tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
        assert!(
            !status.message().contains(&reviews_token),
            "{what}: the refusal never echoes the token"
        );
        status.message().to_string()
    };

    // The reviews token asking for ratings' identity: the CA signs for the token's
    // service account only, whatever the CSR says.
    let ratings = SpiffeId::new("shop", "ratings").expect("id");
    let signed = ca
        .sign(bearer(csr(&ratings), &reviews_token))
        .await
        .expect("signed for the token's own identity")
        .into_inner();
    let leaf = trellis_identity::cert::certs_from_pem(&signed.chain_pem).expect("a chain");
    let id = trellis_identity::cert::spiffe_id_of(&leaf[0]).expect("a SPIFFE id");
    assert_eq!(id, reviews, "never the identity the CSR asked for");

    // A token for another audience (the API server's own).
    let wrong_audience = token(
        &client,
        "shop",
        "ratings",
        "https://kubernetes.default.svc.cluster.local",
    )
    .await
    .expect("a token");
    let message = refused(
        ca.sign(bearer(csr(&ratings), &wrong_audience)).await,
        "another audience",
    );
    assert!(message.contains("service-account token"), "{message}");

    // Not a service account: the admin's static token.
    refused(
        ca.sign(bearer(csr(&ratings), ADMIN_TOKEN)).await,
        "a user's token",
    );
    // Made up.
    refused(
        ca.sign(bearer(csr(&ratings), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"))
            .await,
        "a forged token",
    );
    // A token from another cluster's signer looks the same to us: the API server
    // cannot verify it, so it is refused like the forged one.

    // The pod is gone: its bound token dies with it.
    pods.delete("reviews-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete the pod");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let result = ca.sign(bearer(csr(&reviews), &reviews_token)).await;
        if result.is_err() {
            refused(result, "a deleted pod's token");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a deleted pod's bound token still signs after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
