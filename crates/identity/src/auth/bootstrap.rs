//! One-time bootstrap tokens for local mode: the runner mints one per proxy start,
//! bound to a namespace and service account; the control plane accepts it once.
//! The store is a directory both share, holding token hashes only; being redeemed
//! is a file created with O_EXCL, so exactly one redemption wins, restart or not.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::{AuthError, AuthFuture, Authenticator, Credential, WorkloadIdentity};
use crate::files;
use crate::random;
use crate::spiffe::SpiffeIdError;

const ISSUED: &str = "issued";
const USED: &str = "used";
const RECORD_VERSION: &str = "v1";
/// 32 random bytes, base64url without padding.
const TOKEN_LEN: usize = 43;

/// Why the token store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a bootstrap token record: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Identity(#[from] SpiffeIdError),
}

/// A freshly minted token: hand `secret()` to the one proxy it is for.
pub struct BootstrapToken {
    secret: String,
    identity: WorkloadIdentity,
    expires: SystemTime,
}

impl BootstrapToken {
    /// The token itself. It is shown nowhere else (not in `Debug`, not in errors).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn identity(&self) -> &WorkloadIdentity {
        &self.identity
    }

    pub fn expires(&self) -> SystemTime {
        self.expires
    }

    /// The token as a credential for the control plane.
    pub fn credential(&self) -> Credential {
        Credential::BootstrapToken(self.secret.clone())
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("identity", &self.identity)
            .field("expires", &self.expires)
            .field("secret", &"[secret]")
            .finish()
    }
}

/// The token store in one directory (0700), for the runner (mint) and the control
/// plane (redeem) alike:
///
/// - `issued/<sha256 of the token>`: `v1 NAMESPACE SERVICE-ACCOUNT EXPIRES-UNIX`,
///   mode 0600, written to a temporary file and renamed, so a reader never sees
///   half a record and concurrent minting loses nothing;
/// - `used/<sha256 of the token>`: created with O_EXCL when the token is redeemed,
///   so exactly one redemption wins, across restarts and processes.
///
/// Nothing is cached: every redemption reads the disk, so a token minted a moment
/// ago by another process is found.
#[derive(Debug, Clone)]
pub struct BootstrapTokens {
    dir: PathBuf,
}

impl BootstrapTokens {
    /// Opens the store in `dir`, creating it (0700) if needed.
    pub fn open(dir: &Path) -> Result<BootstrapTokens, TokenStoreError> {
        for sub in [dir.to_path_buf(), dir.join(ISSUED), dir.join(USED)] {
            files::create_private_dir(&sub).map_err(io(&sub))?;
        }
        Ok(BootstrapTokens {
            dir: dir.to_path_buf(),
        })
    }

    /// Mints a token for `identity`, valid once within `ttl`. Only its hash is stored.
    pub fn mint(
        &self,
        identity: &WorkloadIdentity,
        ttl: Duration,
    ) -> Result<BootstrapToken, TokenStoreError> {
        let identity = WorkloadIdentity::new(&identity.namespace, &identity.service_account)?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::bytes::<32>());
        let expires = SystemTime::now() + ttl;
        let record = format!(
            "{RECORD_VERSION} {} {} {}\n",
            identity.namespace,
            identity.service_account,
            unix_seconds(expires)
        );
        let path = self.issued_path(&secret);
        files::write_private(&path, record.as_bytes()).map_err(io(&path))?;
        Ok(BootstrapToken {
            secret,
            identity,
            expires,
        })
    }

    /// Accepts `token` once: the workload it was minted for, or why not.
    pub fn redeem(&self, token: &str) -> Result<WorkloadIdentity, AuthError> {
        if !well_formed(token) {
            return Err(AuthError::UnknownToken);
        }
        let path = self.issued_path(token);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AuthError::UnknownToken),
            Err(e) => return Err(io(&path)(e).into()),
        };
        let (identity, expires) = parse_record(&text, &path)?;
        if SystemTime::now() > expires {
            return Err(AuthError::TokenExpired);
        }
        let used = self
            .dir
            .join(USED)
            .join(random::sha256_hex(token.as_bytes()));
        let marker = format!("{}\n", unix_seconds(SystemTime::now()));
        if !files::create_exclusive(&used, marker.as_bytes()).map_err(io(&used))? {
            return Err(AuthError::TokenAlreadyUsed);
        }
        tracing::debug!(namespace = %identity.namespace, service_account = %identity.service_account, "bootstrap token redeemed");
        Ok(identity)
    }

    /// Removes the records (and used markers) of tokens that have expired; a
    /// removed token stays refused (as unknown). Returns how many went.
    pub fn prune(&self) -> Result<usize, TokenStoreError> {
        let issued = self.dir.join(ISSUED);
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&issued).map_err(io(&issued))? {
            let entry = entry.map_err(io(&issued))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            match parse_record(&text, &path) {
                Ok((_, expires)) if now > expires => {
                    let _ = fs::remove_file(self.dir.join(USED).join(name));
                    fs::remove_file(&path).map_err(io(&path))?;
                    removed += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping a bootstrap token record"),
            }
        }
        Ok(removed)
    }

    fn issued_path(&self, token: &str) -> PathBuf {
        self.dir
            .join(ISSUED)
            .join(random::sha256_hex(token.as_bytes()))
    }
}

impl Authenticator for BootstrapTokens {
    /// Reads and writes small files in place (microseconds; no blocking pool).
    fn authenticate<'a>(&'a self, credential: &'a Credential) -> AuthFuture<'a> {
        Box::pin(async move {
            match credential {
                Credential::BootstrapToken(token) => self.redeem(token),
                other => Err(AuthError::Unsupported(other.kind())),
            }
        })
    }
}

/// `v1 NAMESPACE SERVICE-ACCOUNT EXPIRES-UNIX-SECONDS`
fn parse_record(
    text: &str,
    path: &Path,
) -> Result<(WorkloadIdentity, SystemTime), TokenStoreError> {
    let corrupt = |reason: &str| TokenStoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut fields = text.split_ascii_whitespace();
    let (Some(RECORD_VERSION), Some(ns), Some(sa), Some(expires), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(corrupt("expected \"v1 NAMESPACE SERVICE-ACCOUNT EXPIRES\""));
    };
    let expires: u64 = expires
        .parse()
        .map_err(|_| corrupt("the expiry is not a number"))?;
    let identity = WorkloadIdentity::new(ns, sa)?;
    Ok((identity, UNIX_EPOCH + Duration::from_secs(expires)))
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn io(path: &Path) -> impl Fn(io::Error) -> TokenStoreError + '_ {
    move |source| TokenStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
