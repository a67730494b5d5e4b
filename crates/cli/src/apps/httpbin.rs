//! `trellis httpbin`: the endpoints of the httpbin service that Istio's samples and
//! tasks call (`/get`, `/headers`, `/status/418`, `/delay/5`, `/anything`, `/ip`,
//! `/user-agent`), answering in go-httpbin's JSON shape (header and query values as
//! lists), so `trellis up` can run Istio's `samples/httpbin` unchanged.
//!
//! It is a stand-in for those calls, not all of httpbin; other paths get 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, HeaderMap, USER_AGENT};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::Body;
use super::identity::Identity;
use super::server::{self, ListenArgs, Peer};

/// Longest `/delay/N` accepted, in seconds (go-httpbin's own limit).
const MAX_DELAY_SECONDS: f64 = 10.0;
/// Largest request body `/anything` reads back.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, clap::Args)]
#[command(after_help = "Endpoints (JSON as go-httpbin writes it):
  /get, /anything[/...]   the request: args, headers, origin, url (anything also method, data, json)
  /headers, /ip, /user-agent
  /status/CODE            answer with that status (418 draws a teapot)
  /delay/N                wait N seconds (at most 10), then answer as /get

Examples:
  trellis httpbin                         listen on 127.0.0.1:8080
  PORT=8080 trellis httpbin               listen on 0.0.0.0:8080, as the sample's container
  curl -s localhost:8080/headers -H 'x-b3-sampled: 1'")]
pub struct Args {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Version reported in `x-trellis-version`.
    #[arg(long, value_name = "V", env = "SERVICE_VERSION", default_value = "v1")]
    pub version: String,
    /// Pod name [default: the host name].
    #[arg(long, value_name = "POD", env = "POD_NAME")]
    pub pod: Option<String>,
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> i32 {
    server::run(async {
        let addr = args
            .listen
            .resolve(SocketAddr::from(([127, 0, 0, 1], 8080)))?;
        let identity = Arc::new(Identity::new(
            "httpbin".into(),
            args.version.clone(),
            args.pod.clone(),
        )?);
        server::serve("httpbin", addr, move |request| {
            let identity = Arc::clone(&identity);
            async move { handle(&identity, request).await }
        })
        .await
    })
}

async fn handle(identity: &Identity, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let reply = |value: Value| {
        let mut json = serde_json::to_vec_pretty(&value).expect("JSON values serialize");
        json.push(b'\n');
        identity.json(StatusCode::OK, json)
    };
    match path.as_str() {
        "/get" if request.method() == Method::GET || request.method() == Method::HEAD => {
            reply(described(&request))
        }
        "/headers" => reply(json!({ "headers": headers(request.headers()) })),
        "/ip" => reply(json!({ "origin": origin(&request) })),
        "/user-agent" => reply(json!({
            "user-agent": request.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("")
        })),
        _ if path == "/anything" || path.starts_with("/anything/") => {
            let mut value = described(&request);
            let method = request.method().to_string();
            let body = match read_body(request).await {
                Ok(body) => body,
                Err(message) => return identity.error(StatusCode::PAYLOAD_TOO_LARGE, &message),
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            value["method"] = json!(method);
            value["json"] = serde_json::from_slice(&body).unwrap_or(Value::Null);
            value["data"] = json!(text);
            reply(value)
        }
        _ => {
            if let Some(code) = path.strip_prefix("/status/") {
                return status(identity, code);
            }
            if let Some(seconds) = path.strip_prefix("/delay/") {
                return match seconds.parse::<f64>() {
                    Ok(s) if (0.0..=MAX_DELAY_SECONDS).contains(&s) => {
                        tokio::time::sleep(Duration::from_secs_f64(s)).await;
                        reply(described(&request))
                    }
                    _ => identity.error(
                        StatusCode::BAD_REQUEST,
                        "/delay/N needs seconds from 0 to 10",
                    ),
                };
            }
            identity.error(StatusCode::NOT_FOUND, "not an httpbin endpoint this serves")
        }
    }
}

/// `/status/CODE`: the status with an empty body; 418 with its teapot.
fn status(identity: &Identity, code: &str) -> Response<Body> {
    match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
        Some(StatusCode::IM_A_TEAPOT) => {
            identity.respond(StatusCode::IM_A_TEAPOT, "text/plain", Body::full(TEAPOT))
        }
        Some(status) if (200..600).contains(&status.as_u16()) => {
            identity.respond(status, "text/plain; charset=utf-8", Body::empty())
        }
        _ => identity.error(
            StatusCode::BAD_REQUEST,
            "/status/CODE needs a status code from 200 to 599",
        ),
    }
}

const TEAPOT: &str = "
    -=[ teapot ]=-

       _...._
     .'  _ _ `.
    | .\"` ^ `\". _,
    \\_;`\"---\"`|//
      |       ;/
      \\_     _/
        `\"\"\"`
";

/// What `/get` answers: the query, the headers, the caller and the URL.
fn described<B>(request: &Request<B>) -> Value {
    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in request.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(k.to_string()).or_default().push(v.to_string());
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    json!({
        "args": args,
        "headers": headers(request.headers()),
        "origin": origin(request),
        "url": format!("http://{host}{path_and_query}"),
    })
}

/// Headers as go-httpbin writes them: canonical names, each with its list of values.
fn headers(map: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in map {
        out.entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if let Some(host) = map.get(HOST) {
        out.insert(
            "Host".into(),
            vec![String::from_utf8_lossy(host.as_bytes()).into_owned()],
        );
    }
    out
}

/// `x-forwarded-for` → `X-Forwarded-For`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The caller: the first `X-Forwarded-For` address, else the connection's peer.
fn origin<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .or_else(|| {
            request
                .extensions()
                .get::<Peer>()
                .map(|p| p.0.ip().to_string())
        })
        .unwrap_or_default()
}

async fn read_body(request: Request<Incoming>) -> Result<Vec<u8>, String> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(_) => Err(format!("a body of at most {MAX_BODY} bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_describes_query_headers_and_url_as_go_httpbin() {
        let request = Request::get("/get?a=1&a=2&b")
            .header("host", "httpbin:8000")
            .header("x-forwarded-for", "10.0.0.9, 10.0.0.1")
            .header("x-request-id", "r1")
            .body(())
            .expect("a request");
        let value = described(&request);
        assert_eq!(value["args"], json!({"a": ["1", "2"], "b": [""]}));
        assert_eq!(value["headers"]["X-Request-Id"], json!(["r1"]));
        assert_eq!(value["headers"]["Host"], json!(["httpbin:8000"]));
        assert_eq!(value["origin"], "10.0.0.9");
        assert_eq!(value["url"], "http://httpbin:8000/get?a=1&a=2&b");
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical("x-b3-sampled"), "X-B3-Sampled");
        assert_eq!(canonical("user-agent"), "User-Agent");
    }
}
