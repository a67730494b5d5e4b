//! RequestAuthentication `jwksUri`: the control plane fetches each key set (as istiod
//! does), caches it, refreshes it every 20 minutes, and puts its text into the JWT
//! rules it pushes, so proxies never reach out themselves. A failed fetch keeps the
//! last good keys (counted in a metric and logged); a key set never fetched yet
//! leaves its rules pending, which refuses their tokens (401) rather than admit them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_model::Security;

/// How often a key set is fetched again (Istio's default refresh).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed first fetch is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// The largest key set read.
const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
struct Entry {
    /// The last key set fetched and parsed as JSON.
    keys: Option<String>,
    /// Why the last fetch failed, if it did.
    error: Option<String>,
    /// When to fetch again; `None`: a fetch is running.
    next: Option<Instant>,
}

/// Key sets by URI, shared by every compile.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// URIs [`Cache::fill`] found due, for [`Cache::take_due`].
    due: Arc<Mutex<Vec<String>>>,
    /// Failed fetches so far (a control-plane metric).
    pub failures: Arc<std::sync::atomic::AtomicU64>,
}

impl Cache {
    /// Fills the remote key sets of `security` from the cache, and notes the URIs due
    /// for a fetch (unknown, or their refresh time has come) for [`Cache::take_due`].
    pub fn fill(&self, security: &mut Security) {
        let uris: Vec<String> = security.jwks_uris().map(str::to_string).collect();
        if uris.is_empty() {
            return;
        }
        let mut due = Vec::new();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for uri in uris {
            let entry = entries.entry(uri.clone()).or_insert_with(|| Entry {
                next: Some(now),
                ..Entry::default()
            });
            match (&entry.keys, &entry.error) {
                (Some(keys), _) => security.set_jwks(&uri, Ok(keys.clone())),
                (None, Some(error)) => security.set_jwks(&uri, Err(error.clone())),
                (None, None) => {}
            }
            if entry.next.is_some_and(|t| t <= now) {
                entry.next = None;
                due.push(uri);
            }
        }
        drop(entries);
        if !due.is_empty() {
            self.due
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(due);
        }
    }

    /// The URIs to fetch now (each once).
    pub fn take_due(&self) -> Vec<String> {
        std::mem::take(&mut *self.due.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// When the next refresh is due, if any key set is known.
    pub fn next_refresh(&self) -> Option<Instant> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().filter_map(|e| e.next).min()
    }

    /// Marks entries whose refresh time came as due (the caller recompiles, which
    /// fills and so schedules them).
    pub fn refresh_due(&self) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().any(|e| e.next.is_some_and(|t| t <= now))
    }

    /// Fetches `uri` and records the outcome; true when what proxies get changed.
    pub async fn fetch(&self, uri: &str) -> bool {
        let outcome = get(uri).await.and_then(|body| {
            serde_json::from_str::<serde_json::Value>(&body)
                .map_err(|e| format!("not a JSON key set: {e}"))
                .and_then(|v| {
                    v.get("keys")
                        .and_then(|k| k.as_array())
                        .map(|_| body.clone())
                        .ok_or_else(|| "no `keys` list in the document".to_string())
                })
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(uri.to_string()).or_default();
        match outcome {
            Ok(keys) => {
                let changed = entry.keys.as_deref() != Some(keys.as_str()) || entry.error.is_some();
                entry.keys = Some(keys);
                entry.error = None;
                entry.next = Some(Instant::now() + REFRESH);
                changed
            }
            Err(error) => {
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%uri, %error, kept = entry.keys.is_some(), "cannot fetch a JWKS (jwksUri); the last good keys stay");
                let first = entry.keys.is_none();
                entry.next = Some(Instant::now() + if first { RETRY } else { REFRESH });
                // With keys already, proxies keep them; without, rules say why.
                let changed = first && entry.error.as_deref() != Some(error.as_str());
                if first {
                    entry.error = Some(error);
                }
                changed
            }
        }
    }
}

/// `GET uri` over HTTP or HTTPS (the system's roots), bounded in time and size.
async fn get(uri: &str) -> Result<String, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
    let host = parsed
        .host()
        .ok_or_else(|| format!("{uri}: no host"))?
        .to_string();
    let https = parsed.scheme_str() == Some("https");
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        let request = http::Request::get(path)
            .header(http::header::HOST, &host)
            .header(http::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = if https {
            let config = tls_client()?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{uri}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{uri}: TLS: {e}"))?;
            send(hyper_util::rt::TokioIo::new(tls), request).await?
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), request).await?
        };
        Ok::<_, String>(response)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{uri}: timed out"))?
}

async fn send<I>(
    io: I,
    request: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<String, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
}

/// A client config trusting the system's CA bundle (Debian, then Fedora paths).
fn tls_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .ok_or("no system CA bundle to verify the JWKS server with")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in trellis_identity::cert::certs_from_pem(&String::from_utf8_lossy(&pem))
        .map_err(|e| e.to_string())?
    {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
