//! The sample workloads as real processes: `trellis echo` over HTTP/1.1, h2c and
//! gRPC, and the four bookinfo services wired together through `<SERVICE>_ADDR`
//! or through an HTTP proxy.
//!
//! Every app listens on `127.0.0.1:0` and announces the port the OS chose on its
//! first line of output, so there is no window in which another process can take
//! a port picked in advance. Children are killed when their guard drops.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Longest wait for an app to announce its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running app, killed on drop.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Variables a developer's shell might set that would change what the apps do.
const CLEARED: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "LISTEN",
    "PORT",
    "SERVICE_NAME",
    "SERVICE_VERSION",
    "POD_NAME",
    "STARS",
    "DETAILS_ADDR",
    "REVIEWS_ADDR",
    "RATINGS_ADDR",
];

/// Starts `trellis ARGS --listen 127.0.0.1:0` with `env`, and waits (bounded) for
/// its `... listening on http://ADDR` line.
fn start(args: &[&str], env: &[(&str, String)]) -> App {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trellis"));
    command.args(args).args(["--listen", "127.0.0.1:0"]);
    for name in CLEARED {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis");
    let stdout = child.stdout.take().expect("piped stdout");
    let (announced, addr) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some((_, addr)) = line.split_once(" listening on http://") {
                let _ = announced.send(addr.to_string());
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    match addr.recv_timeout(START_TIMEOUT) {
        Ok(addr) => App {
            child,
            addr: addr.parse().expect("announced address"),
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("trellis {args:?} did not announce an address: {stderr}");
        }
    }
}

/// An address nothing listens on, held by a socket bound (port 0) that never listens:
/// connections are refused, and no other program can take the port while it lives.
struct ClosedPort {
    addr: String,
    _socket: tokio::net::TcpSocket,
}

fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("address").to_string();
    ClosedPort {
        addr,
        _socket: socket,
    }
}

/// A response read to the end.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("read body");
    Reply {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
    }
}

/// `GET path` over HTTP/1.1 with `headers`.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::<Bytes>::default()).expect("request");
    read(sender.send_request(request).await.expect("response")).await
}

/// `request` over HTTP/2 with prior knowledge (h2c).
async fn h2(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    read(sender.send_request(request).await.expect("response")).await
}

fn echo() -> App {
    start(
        &["echo", "--name", "hello"],
        &[
            ("SERVICE_VERSION", "v7".into()),
            ("POD_NAME", "hello-0".into()),
        ],
    )
}

#[tokio::test]
async fn echo_answers_with_json_describing_itself_and_the_request() {
    let app = echo();
    let reply = get(app.addr, "/some/path?a=1&b=2", &[("x-test", "yes")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-trellis-service"), "hello");
    assert_eq!(reply.header("x-trellis-version"), "v7");
    let json = reply.json();
    assert_eq!(json["service"], "hello");
    assert_eq!(json["version"], "v7");
    assert_eq!(json["pod"], "hello-0");
    let request = &json["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["path"], "/some/path");
    assert_eq!(request["query"], "a=1&b=2");
    assert_eq!(request["headers"]["x-test"], "yes");
    assert_eq!(request["headers"]["host"], app.addr.to_string());
    assert_eq!(request["protocol"], "HTTP/1.1");
}

#[tokio::test]
async fn echo_status_path_answers_with_that_status() {
    let app = echo();
    let reply = get(app.addr, "/status/503", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["request"]["path"], "/status/503");
    assert_eq!(reply.header("x-trellis-version"), "v7");
    assert_eq!(
        get(app.addr, "/status/42", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn echo_delay_path_waits_before_answering() {
    let app = echo();
    let started = Instant::now();
    let reply = get(app.addr, "/delay/50", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        get(app.addr, "/delay/60001", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn echo_bytes_path_returns_exactly_that_many_bytes() {
    let app = echo();
    let reply = get(app.addr, "/bytes/100000", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), "100000");
    assert_eq!(reply.body.len(), 100_000);
    assert_eq!(
        get(app.addr, "/bytes/999999999", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn echo_speaks_h2c_with_prior_knowledge_on_the_same_port() {
    let app = echo();
    let request = Request::get(format!("http://{}/over/h2?x=1", app.addr))
        .header("x-test", "h2")
        .body(Full::default())
        .expect("request");
    let reply = h2(app.addr, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["request"]["protocol"], "HTTP/2.0");
    assert_eq!(json["request"]["path"], "/over/h2");
    assert_eq!(json["request"]["host"], app.addr.to_string());
    assert_eq!(json["request"]["headers"]["x-test"], "h2");
}

#[tokio::test]
async fn grpc_health_check_answers_serving_with_status_zero() {
    let app = echo();
    let request = Request::post(format!("http://{}/grpc.health.v1.Health/Check", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // An empty HealthCheckRequest: flag 0, length 0.
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let reply = h2(app.addr, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/grpc");
    // HealthCheckResponse { status: SERVING (1) }, length-prefixed.
    assert_eq!(&reply.body[..], &[0, 0, 0, 0, 2, 0x08, 0x01]);
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");

    let other = Request::post(format!("http://{}/pkg.Service/Method", app.addr))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let reply = h2(app.addr, other).await;
    assert_eq!(reply.header("grpc-status"), "12", "UNIMPLEMENTED");
}

#[cfg(unix)]
#[test]
fn echo_exits_zero_on_sigterm() {
    let mut app = echo();
    let status = Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = app.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "echo still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}

/// ratings, reviews (`version` with `stars`), details and productpage, wired by `*_ADDR`.
struct Bookinfo {
    productpage: App,
    _reviews: App,
    _details: App,
    _ratings: App,
}

fn bookinfo(version: &str, stars: &str) -> Bookinfo {
    let ratings = start(&["bookinfo", "ratings"], &[]);
    let details = start(&["bookinfo", "details"], &[]);
    let reviews = start(
        &["bookinfo", "reviews"],
        &[
            ("STARS", stars.into()),
            ("SERVICE_VERSION", version.into()),
            ("RATINGS_ADDR", ratings.addr.to_string()),
        ],
    );
    let productpage = start(
        &["bookinfo", "productpage"],
        &[
            ("DETAILS_ADDR", details.addr.to_string()),
            ("REVIEWS_ADDR", reviews.addr.to_string()),
        ],
    );
    Bookinfo {
        productpage,
        _reviews: reviews,
        _details: details,
        _ratings: ratings,
    }
}

#[tokio::test]
async fn productpage_shows_details_and_reviews_with_black_stars_from_v2() {
    let app = bookinfo("v2", "black");
    let reply = get(app.productpage.addr, "/api/v1/products/0", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-trellis-service"), "productpage");
    assert_eq!(reply.header("x-trellis-version"), "v1");
    let json = reply.json();
    assert_eq!(json["details"]["author"], "William Shakespeare");
    let reviews = json["reviews"]["reviews"].as_array().expect("reviews");
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0]["rating"]["stars"], 5);
    assert_eq!(reviews[1]["rating"]["stars"], 4);
    assert_eq!(reviews[0]["rating"]["color"], "black");
    assert_eq!(json["versions"]["reviews"], "v2");
    assert_eq!(json["versions"]["details"], "v1");

    let page = get(app.productpage.addr, "/productpage", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("The Comedy of Errors"), "{html}");
    assert!(html.contains("Reviewer1"), "{html}");
    assert!(html.contains("color: black\">★★★★★"), "{html}");
    assert!(html.contains("reviews v2"), "{html}");
}

#[tokio::test]
async fn reviews_v1_shows_no_stars_and_needs_no_ratings() {
    let ratings = closed_port();
    let reviews = start(
        &["bookinfo", "reviews"],
        &[
            ("STARS", "none".into()),
            ("RATINGS_ADDR", ratings.addr.clone()),
        ],
    );
    let reply = get(reviews.addr, "/reviews/0", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-trellis-service"), "reviews");
    let json = reply.json();
    for review in json["reviews"].as_array().expect("reviews") {
        assert!(review.get("rating").is_none(), "{review}");
    }
}

#[tokio::test]
async fn reviews_with_stars_reports_ratings_unavailable_when_ratings_is_down() {
    let ratings = closed_port();
    let reviews = start(
        &["bookinfo", "reviews"],
        &[
            ("STARS", "red".into()),
            ("RATINGS_ADDR", ratings.addr.clone()),
        ],
    );
    let json = get(reviews.addr, "/reviews/0", &[]).await.json();
    assert_eq!(
        json["reviews"][0]["rating"]["error"],
        "Ratings service is currently unavailable"
    );
}

#[tokio::test]
async fn productpage_degrades_gracefully_when_reviews_is_down() {
    let details = start(&["bookinfo", "details"], &[]);
    let reviews = closed_port();
    let productpage = start(
        &["bookinfo", "productpage"],
        &[
            ("DETAILS_ADDR", details.addr.to_string()),
            ("REVIEWS_ADDR", reviews.addr.clone()),
        ],
    );
    let page = get(productpage.addr, "/productpage", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("reviews unavailable"), "{html}");
    assert!(html.contains("PublisherA"), "details still shown: {html}");

    let reply = get(productpage.addr, "/api/v1/products/0", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    let error = json["reviews"]["error"].as_str().expect("error");
    assert!(error.starts_with("reviews unavailable"), "{error}");
    assert_eq!(json["details"]["publisher"], "PublisherA");
}

#[tokio::test]
async fn productpage_calls_through_http_proxy_with_service_host_and_propagated_headers() {
    // The echo server stands in for the sidecar: it shows what productpage sent.
    let proxy = echo();
    let productpage = start(
        &["bookinfo", "productpage"],
        &[("HTTP_PROXY", format!("http://{}", proxy.addr))],
    );
    let inbound = [
        ("x-user-type", "beta"),
        ("x-request-id", "req-1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ("x-not-propagated", "no"),
    ];
    let json = get(productpage.addr, "/api/v1/products/0", &inbound)
        .await
        .json();
    for (service, path) in [("reviews", "/reviews/0"), ("details", "/details/0")] {
        let seen = &json[service]["request"];
        assert_eq!(seen["path"], path, "{json}");
        assert_eq!(seen["headers"]["host"], format!("{service}:9080"));
        for (name, value) in &inbound[..4] {
            assert_eq!(seen["headers"][*name], *value, "{name} to {service}");
        }
        assert!(seen["headers"].get("x-not-propagated").is_none());
    }
    assert_eq!(json["versions"]["reviews"], "v7", "the proxy's version");
}
