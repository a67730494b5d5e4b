//! One mesh CA for every replica: its root lives in a Secret of the control plane's
//! namespace, as Istio keeps it. A plugged-in `cacerts` Secret (Istio's layout) wins;
//! else `istio-ca-secret` holds the self-signed root, made by whichever replica starts
//! first — creating a Secret is atomic, so two replicas starting together agree on the
//! one that was created, never on two roots. The files are written 0600 into the
//! replica's state directory, where the CA loads them as in local mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use trellis_identity::ca::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};

/// Istio's Secret for a plugged-in CA.
pub const PLUGGED_SECRET: &str = "cacerts";
/// Istio's Secret for the self-signed root.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";

/// Where the CA's files were written, and of which kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaFiles {
    /// Istio's plugged-in layout: load with `--cacerts DIR`.
    Plugged(PathBuf),
    /// A self-signed root in `STATE_DIR/ca`: loaded as the control plane's own.
    SelfSigned,
}

/// Why the CA could not be shared.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("Secret {namespace}/{name}: {message}")]
    Api {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("Secret {namespace}/{name} has no {key}")]
    Missing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{}: {source}", .file.display())]
    File {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("a new root: {0}")]
    Create(String),
}

/// Reads (or makes and stores) the mesh CA for this replica, writing its files under
/// `state_dir`.
pub async fn sync(
    client: &kube::Client,
    namespace: &str,
    state_dir: &Path,
    trust_domain: &str,
) -> Result<CaFiles, CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let api_error = |name: &str, e: kube::Error| CaSecretError::Api {
        namespace: namespace.into(),
        name: name.into(),
        message: e.to_string(),
    };
    if let Some(plugged) = api
        .get_opt(PLUGGED_SECRET)
        .await
        .map_err(|e| api_error(PLUGGED_SECRET, e))?
    {
        let dir = state_dir.join("cacerts");
        let data = plugged.data.unwrap_or_default();
        write_files(
            &dir,
            namespace,
            PLUGGED_SECRET,
            &data,
            &[CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN],
        )?;
        return Ok(CaFiles::Plugged(dir));
    }
    let data = shared(
        &api,
        namespace,
        SELF_SIGNED_SECRET,
        Some("istio.io/ca-root"),
        || {
            // None yet: a root made in a scratch directory, to be the one stored.
            let scratch = tempfile::Builder::new()
                .prefix("ca-new")
                .tempdir_in(state_dir)
                .map_err(|source| CaSecretError::File {
                    file: state_dir.to_path_buf(),
                    source,
                })?;
            trellis_identity::Ca::load_or_create(&scratch.path().join("ca"), trust_domain)
                .map_err(|e| CaSecretError::Create(e.to_string()))?;
            let mut data = BTreeMap::new();
            for key in [CA_CERT, CA_KEY] {
                let file = scratch.path().join("ca").join(key);
                let bytes =
                    std::fs::read(&file).map_err(|source| CaSecretError::File { file, source })?;
                data.insert(key.to_string(), ByteString(bytes));
            }
            Ok(data)
        },
    )
    .await?;
    write_files(
        &state_dir.join("ca"),
        namespace,
        SELF_SIGNED_SECRET,
        &data,
        &[CA_CERT, CA_KEY],
    )?;
    Ok(CaFiles::SelfSigned)
}

/// The data of Secret `name`: the one there, else `make`'s, created — atomically, so
/// replicas starting together all end up with the one that was created first.
async fn shared(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    type_: Option<&str>,
    make: impl Fn() -> Result<BTreeMap<String, ByteString>, CaSecretError>,
) -> Result<BTreeMap<String, ByteString>, CaSecretError> {
    let api_error = |e: kube::Error| CaSecretError::Api {
        namespace: namespace.into(),
        name: name.into(),
        message: e.to_string(),
    };
    for _ in 0..3 {
        if let Some(existing) = api.get_opt(name).await.map_err(api_error)? {
            return Ok(existing.data.unwrap_or_default());
        }
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "trellis".to_string(),
                )])),
                ..Default::default()
            },
            type_: type_.map(str::to_string),
            data: Some(make()?),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(created) => {
                tracing::info!(namespace, name, "stored a new Secret for every replica");
                return Ok(created.data.unwrap_or_default());
            }
            // Another replica stored one first: read that one next time round.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(CaSecretError::Create(format!(
        "Secret {namespace}/{name} was neither readable nor creatable"
    )))
}

fn write_files(
    dir: &Path,
    namespace: &str,
    name: &str,
    data: &BTreeMap<String, ByteString>,
    keys: &[&str],
) -> Result<(), CaSecretError> {
    trellis_identity::files::create_private_dir(dir).map_err(|source| CaSecretError::File {
        file: dir.to_path_buf(),
        source,
    })?;
    for key in keys {
        let bytes = data.get(*key).ok_or_else(|| CaSecretError::Missing {
            namespace: namespace.into(),
            name: name.into(),
            key: (*key).into(),
        })?;
        let file = dir.join(key);
        trellis_identity::files::write_private(&file, &bytes.0)
            .map_err(|source| CaSecretError::File { file, source })?;
    }
    Ok(())
}

/// The Secret that holds the control plane's HTTP API token, shared by every replica
/// (so the CLI, reading it with the user's own Kubernetes rights, can call any).
pub const API_TOKEN_SECRET: &str = "trellis-api-token";
/// Its key.
pub const API_TOKEN_KEY: &str = "token";

/// Reads (or makes and stores, atomically) the API token, and writes it 0600 to
/// `STATE_DIR/api-token`, where the control plane reads its token from.
pub async fn sync_api_token(
    client: &kube::Client,
    namespace: &str,
    state_dir: &Path,
) -> Result<(), CaSecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let data = shared(&api, namespace, API_TOKEN_SECRET, None, || {
        Ok(BTreeMap::from([(
            API_TOKEN_KEY.to_string(),
            ByteString(trellis_identity::random_token().into_bytes()),
        )]))
    })
    .await?;
    let token = data
        .get(API_TOKEN_KEY)
        .ok_or_else(|| CaSecretError::Missing {
            namespace: namespace.into(),
            name: API_TOKEN_SECRET.into(),
            key: API_TOKEN_KEY.into(),
        })?;
    let file = state_dir.join("api-token");
    trellis_identity::files::write_private(&file, &token.0)
        .map_err(|source| CaSecretError::File { file, source })
}
