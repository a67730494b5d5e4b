//! The app's HTTP probes, asked through the sidecar (Istio's probe rewrite): the
//! injector points the kubelet's probes at the stats port (`/app-health/NAME/readyz`)
//! and hands the originals to the proxy in `ISTIO_KUBE_APP_PROBERS`. The proxy asks the
//! app on 127.0.0.1 as its own user, which capture leaves alone, so a probe reaches the
//! app even when the inbound side requires mutual TLS. The app's answer code is
//! passed back; a refused or slow app is 503.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment variable Istio's injector fills.
pub const ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// One original probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prober {
    http_get: HttpGet,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpGet {
    #[serde(default)]
    path: Option<String>,
    port: u16,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<Header>,
}

#[derive(Debug, Clone, Deserialize)]
struct Header {
    name: String,
    value: String,
}

/// The probes by their rewritten path.
#[derive(Debug, Clone, Default)]
pub struct AppProbes {
    probers: HashMap<String, Prober>,
}

/// Why `ISTIO_KUBE_APP_PROBERS` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}: {0}")]
pub struct ProbersError(String);

impl AppProbes {
    /// Reads Istio's JSON: `{"/app-health/app/readyz": {"httpGet": {...}, "timeoutSeconds": 1}}`.
    pub fn parse(json: &str) -> Result<AppProbes, ProbersError> {
        let probers: HashMap<String, Prober> =
            serde_json::from_str(json).map_err(|e| ProbersError(e.to_string()))?;
        if let Some((path, _)) = probers.iter().find(|(_, p)| {
            p.http_get
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
        }) {
            return Err(ProbersError(format!(
                "{path}: only HTTP probes are asked through the sidecar"
            )));
        }
        Ok(AppProbes { probers })
    }

    /// Whether `path` is one of the rewritten probes.
    pub fn knows(&self, path: &str) -> bool {
        self.probers.contains_key(path)
    }

    /// Asks the app, as the kubelet would have: its status code, or 503.
    pub async fn probe(&self, path: &str) -> (StatusCode, String) {
        let Some(prober) = self.probers.get(path) else {
            return (StatusCode::NOT_FOUND, "no such probe\n".into());
        };
        let timeout = Duration::from_secs(prober.timeout_seconds.unwrap_or(1).clamp(1, 60));
        match tokio::time::timeout(timeout, ask(&prober.http_get)).await {
            Ok(Ok(status)) => (status, format!("app answered {}\n", status.as_u16())),
            Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("app probe: {e}\n")),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("app probe: no answer within {timeout:?}\n"),
            ),
        }
    }
}

async fn ask(get: &HttpGet) -> std::io::Result<StatusCode> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", get.port)).await?;
    let path = get.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nuser-agent: kube-probe\r\nconnection: close\r\n",
        get.port
    );
    for h in &get.http_headers {
        if !h.name.contains(['\r', '\n']) && !h.value.contains(['\r', '\n']) {
            head.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut buf = [0u8; 16];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut buf[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = std::str::from_utf8(&buf[..read]).unwrap_or_default();
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_asks_the_app_and_passes_its_code_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.expect("read");
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            head
        });
        let probes = AppProbes::parse(&format!(
            r#"{{"/app-health/web/readyz": {{"httpGet": {{"path": "/ready", "port": {port},
              "httpHeaders": [{{"name": "x-probe", "value": "yes"}}]}}, "timeoutSeconds": 2}}}}"#
        ))
        .expect("parse");
        assert!(probes.knows("/app-health/web/readyz"));
        let (status, _) = probes.probe("/app-health/web/readyz").await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        let head = server.await.expect("server");
        assert!(head.starts_with("GET /ready HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("x-probe: yes"), "{head}");
        let (status, _) = probes.probe("/app-health/other/readyz").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable_and_https_is_refused_when_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let probes = AppProbes::parse(&format!(
            r#"{{"/app-health/web/livez": {{"httpGet": {{"port": {port}}}}}}}"#
        ))
        .expect("parse");
        let (status, _) = probes.probe("/app-health/web/livez").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            AppProbes::parse(r#"{"/p": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}"#).is_err()
        );
    }
}
