//! Calls from one sample app to another, as an application in a mesh makes them:
//! `GET http://SERVICE:9080/PATH`, copying the tracing and routing headers Istio
//! asks applications to propagate.
//!
//! Where the connection goes is decided once at start-up: the proxy named by
//! `HTTP_PROXY` (our sidecar; origin-form request with `Host: SERVICE:9080`), else
//! `<SERVICE>_ADDR` (local runs, tests), else `SERVICE:9080` by DNS.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HOST, HeaderMap, HeaderValue, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::identity::VERSION_HEADER;

/// The port every bookinfo service listens on.
pub const PORT: u16 = 9080;
/// Whole-call budget: connect, request and response body.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body read.
const MAX_BODY: usize = 1024 * 1024;

/// Headers copied from the inbound request to every upstream call: trace context
/// (W3C, B3, OpenTracing), Envoy's request id, and the headers routing rules match.
pub const PROPAGATED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-user-type",
    "end-user",
];

/// The services one app calls, with where to connect for each.
#[derive(Debug)]
pub struct Upstreams {
    services: Vec<Upstream>,
    user_agent: HeaderValue,
}

#[derive(Debug)]
struct Upstream {
    service: &'static str,
    /// Where to connect: the proxy, `<SERVICE>_ADDR`, or `SERVICE:9080`.
    connect: String,
    /// `SERVICE:9080`, the `Host` of every request.
    host: HeaderValue,
}

/// An upstream's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The `x-trellis-version` the upstream stamped, if any.
    pub version: Option<String>,
    pub body: Bytes,
}

impl Upstreams {
    /// Resolves where each of `services` is reached, from the environment.
    pub fn from_env(caller: &str, services: &[&'static str]) -> anyhow::Result<Self> {
        let proxy = ["HTTP_PROXY", "http_proxy"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .map(|url| proxy_address(&url))
            .transpose()?;
        let services = services
            .iter()
            .map(|&service| {
                let variable = format!("{}_ADDR", service.to_uppercase().replace('-', "_"));
                let connect = proxy
                    .clone()
                    .or_else(|| std::env::var(&variable).ok().filter(|v| !v.is_empty()))
                    .unwrap_or_else(|| format!("{service}:{PORT}"));
                let host = HeaderValue::from_str(&format!("{service}:{PORT}"))
                    .expect("service names are header-safe constants");
                Upstream {
                    service,
                    connect,
                    host,
                }
            })
            .collect();
        Ok(Upstreams {
            services,
            user_agent: HeaderValue::from_str(&format!("trellis-bookinfo-{caller}"))
                .expect("caller names are header-safe constants"),
        })
    }

    /// `GET http://SERVICE:9080{path}`, copying the propagated headers of `inbound`.
    pub async fn get(
        &self,
        service: &str,
        path: &str,
        inbound: &HeaderMap,
    ) -> anyhow::Result<Reply> {
        let upstream = self
            .services
            .iter()
            .find(|u| u.service == service)
            .with_context(|| format!("{service} is not an upstream of this app"))?;
        let mut request = Request::get(path)
            .body(Empty::<Bytes>::new())
            .context("bad upstream path")?;
        let headers = request.headers_mut();
        headers.insert(HOST, upstream.host.clone());
        headers.insert(USER_AGENT, self.user_agent.clone());
        for &name in PROPAGATED {
            for value in inbound.get_all(name) {
                headers.append(name, value.clone());
            }
        }
        tokio::time::timeout(TIMEOUT, send(&upstream.connect, request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", TIMEOUT.as_secs()))?
            .with_context(|| format!("{service} via {}", upstream.connect))
    }
}

/// One request on a fresh HTTP/1.1 connection to `address`.
async fn send(address: &str, request: Request<Empty<Bytes>>) -> anyhow::Result<Reply> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let version = response
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("reading the response: {error}"))?
            .to_bytes();
        anyhow::Ok(Reply {
            status,
            version,
            body,
        })
    };
    // Drive the connection and the exchange together, so a timeout drops both.
    let mut exchange = std::pin::pin!(exchange);
    let mut connection = std::pin::pin!(connection);
    let mut connection_done = false;
    loop {
        tokio::select! {
            reply = &mut exchange => return reply,
            closed = &mut connection, if !connection_done => {
                closed?;
                connection_done = true;
            }
        }
    }
}

/// `host:port` from a proxy URL such as `http://127.0.0.1:15001/`.
fn proxy_address(url: &str) -> anyhow::Result<String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            anyhow::bail!("HTTP_PROXY={url:?}: only http:// proxies are supported, not {scheme}://")
        }
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    anyhow::ensure!(!authority.is_empty(), "HTTP_PROXY={url:?} names no host");
    Ok(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_url_becomes_an_address() {
        assert_eq!(
            proxy_address("http://127.0.0.1:15001/").expect("ok"),
            "127.0.0.1:15001"
        );
        assert_eq!(
            proxy_address("127.0.0.1:15001").expect("ok"),
            "127.0.0.1:15001"
        );
        assert_eq!(proxy_address("http://proxy").expect("ok"), "proxy:80");
        assert_eq!(
            proxy_address("http://u:p@proxy:3128").expect("ok"),
            "proxy:3128"
        );
        assert!(proxy_address("https://proxy:443").is_err());
    }
}
