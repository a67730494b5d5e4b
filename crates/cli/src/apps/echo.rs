//! `trellis echo`: an HTTP/1.1 and h2c server that answers every request with JSON
//! describing itself and the request, plus a few test endpoints (`/status/CODE`,
//! `/delay/MS`, `/bytes/N`) and the gRPC health check.
//!
//! It is the peer for mesh tests and benchmarks, so the per-request path does one
//! allocation of note: the JSON reply, serialized straight from borrowed data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, HeaderMap};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::body::Body;
use super::grpc;
use super::identity::Identity;
use super::server::{self, ListenArgs};

/// Longest `/delay/MS` accepted, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Largest `/bytes/N` accepted.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
#[command(after_help = "Endpoints:
  /status/CODE    answer with that status (200-599)
  /delay/MS       wait MS milliseconds (at most 60000), then answer
  /bytes/N        answer with N bytes (at most 16 MiB)
  /grpc.health.v1.Health/Check   gRPC health: SERVING (over h2c)
  anything else   JSON: {service, version, pod, request: {method, host, path, query, headers, protocol}}

Examples:
  trellis echo                                   listen on 127.0.0.1:8080
  trellis echo --listen 0.0.0.0:9000 --name hello --version v2
  PORT=8081 trellis echo                         listen on 0.0.0.0:8081
  curl -s localhost:8080/anything?x=1            the request, echoed as JSON
  curl -s --http2-prior-knowledge localhost:8080/status/503")]
pub struct Args {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Service name reported in replies and in `x-trellis-service`.
    #[arg(
        long,
        value_name = "NAME",
        env = "SERVICE_NAME",
        default_value = "echo"
    )]
    pub name: String,
    /// Version reported in replies and in `x-trellis-version`.
    #[arg(long, value_name = "V", env = "SERVICE_VERSION", default_value = "v1")]
    pub version: String,
    /// Pod name reported in replies [default: the host name].
    #[arg(long, value_name = "POD", env = "POD_NAME")]
    pub pod: Option<String>,
}

/// Runs the echo server until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> i32 {
    server::run(async {
        let addr = args
            .listen
            .resolve(SocketAddr::from(([127, 0, 0, 1], 8080)))?;
        let identity = Arc::new(Identity::new(
            args.name.clone(),
            args.version.clone(),
            args.pod.clone(),
        )?);
        server::serve("echo", addr, move |request| {
            let identity = Arc::clone(&identity);
            async move { handle(&identity, request).await }
        })
        .await
    })
}

async fn handle(identity: &Identity, request: Request<Incoming>) -> Response<Body> {
    if grpc::is_grpc(&request) {
        return grpc::handle(identity, request).await;
    }
    let path = request.uri().path();
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) if (200..600).contains(&status.as_u16()) => {
                if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                    identity.respond(status, "", Body::empty())
                } else {
                    echo(identity, &request, status)
                }
            }
            _ => identity.error(
                StatusCode::BAD_REQUEST,
                "/status/CODE needs a status code from 200 to 599",
            ),
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                echo(identity, &request, StatusCode::OK)
            }
            _ => identity.error(
                StatusCode::BAD_REQUEST,
                "/delay/MS needs milliseconds from 0 to 60000",
            ),
        };
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<usize>() {
            Ok(n) if n <= MAX_BYTES => {
                identity.respond(StatusCode::OK, "application/octet-stream", Body::filler(n))
            }
            _ => identity.error(
                StatusCode::BAD_REQUEST,
                "/bytes/N needs a length from 0 to 16777216",
            ),
        };
    }
    echo(identity, &request, StatusCode::OK)
}

/// The JSON reply describing `identity` and `request`.
fn echo<B>(identity: &Identity, request: &Request<B>, status: StatusCode) -> Response<Body> {
    let reply = Reply {
        service: &identity.service,
        version: &identity.version,
        pod: &identity.pod,
        request: RequestInfo {
            method: request.method().as_str(),
            host: request
                .uri()
                .authority()
                .map(|a| a.as_str())
                .or_else(|| request.headers().get(HOST).and_then(|h| h.to_str().ok()))
                .unwrap_or(""),
            path: request.uri().path(),
            query: request.uri().query().unwrap_or(""),
            headers: Headers(request.headers()),
            protocol: protocol(request.version()),
        },
    };
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, &reply).expect("strings and maps always serialize");
    json.push(b'\n');
    identity.json(status, json)
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct Reply<'a> {
    service: &'a str,
    version: &'a str,
    pod: &'a str,
    request: RequestInfo<'a>,
}

#[derive(Serialize)]
struct RequestInfo<'a> {
    method: &'a str,
    /// The `:authority` (HTTP/2) or `Host` header (HTTP/1.1).
    host: &'a str,
    path: &'a str,
    query: &'a str,
    headers: Headers<'a>,
    protocol: &'static str,
}

/// Request headers as a JSON object; repeated headers are joined with `, `.
struct Headers<'a>(&'a HeaderMap);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self.0.get_all(name).iter();
            let first = values.next().map(|v| String::from_utf8_lossy(v.as_bytes()));
            let mut value = first.unwrap_or_default();
            for more in values {
                let more = String::from_utf8_lossy(more.as_bytes());
                value = format!("{value}, {more}").into();
            }
            map.serialize_entry(name.as_str(), &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn identity() -> Identity {
        Identity::new("echo".into(), "v2".into(), Some("echo-0".into())).expect("valid names")
    }

    async fn json(response: Response<Body>) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn reply_describes_the_service_and_the_request() {
        let request = Request::post("/a/b?x=1&y=2")
            .header("x-one", "1")
            .header("x-many", "a")
            .header("x-many", "b")
            .body(())
            .expect("request");
        let response = echo(&identity(), &request, StatusCode::OK);
        assert_eq!(response.headers()["x-trellis-version"], "v2");
        let value = json(response).await;
        assert_eq!(value["service"], "echo");
        assert_eq!(value["pod"], "echo-0");
        assert_eq!(value["request"]["method"], "POST");
        assert_eq!(value["request"]["path"], "/a/b");
        assert_eq!(value["request"]["host"], "");
        assert_eq!(value["request"]["query"], "x=1&y=2");
        assert_eq!(value["request"]["headers"]["x-one"], "1");
        assert_eq!(value["request"]["headers"]["x-many"], "a, b");
        assert_eq!(value["request"]["protocol"], "HTTP/1.1");
    }
}
