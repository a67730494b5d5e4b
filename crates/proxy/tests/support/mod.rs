//! Test harness: real upstream HTTP servers and a real proxy on loopback, a client,
//! and builders for small configs. Every server runs on its own thread and stops
//! when the test process ends; every wait is bounded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use trellis_model::*;
use trellis_proxy::{Options, Proxy};

/// An address where connections are refused: a socket bound there but not listening,
/// held (so no other test can take the port) for as long as the returned guard lives.
pub fn refused_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// An upstream that answers with its name; `/status/N` and `/delay/MS` behave as named.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU32>,
    /// When > 0, answer this status to every request (for outlier tests).
    pub forced_status: Arc<AtomicU32>,
    /// Connections accepted.
    pub connections: Arc<AtomicU32>,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU32::new(0));
        let forced_status = Arc::new(AtomicU32::new(0));
        let connections = Arc::new(AtomicU32::new(0));
        let (h, f, c) = (hits.clone(), forced_status.clone(), connections.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    let (h, f) = (h.clone(), f.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            answer(name, h.clone(), f.clone(), req)
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Upstream {
            addr,
            hits,
            forced_status,
            connections,
        }
    }
}

async fn answer(
    name: &'static str,
    hits: Arc<AtomicU32>,
    forced: Arc<AtomicU32>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let _ = req.into_body().collect().await;
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
        status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|c| c.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let f = forced.load(Ordering::Relaxed);
    if f > 0 {
        status = StatusCode::from_u16(f as u16).unwrap_or(status);
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let mut response = Response::new(Full::new(Bytes::from(format!("{name} {path} host={host}"))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    if let Some(xfcc) = headers.get("x-forwarded-client-cert") {
        response.headers_mut().insert("x-seen-xfcc", xfcc.clone());
    }
    for (k, v) in &headers {
        if k.as_str().starts_with("x-echo-") {
            response.headers_mut().insert(k.clone(), v.clone());
        }
    }
    Ok(response)
}

/// A response as the test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub upstream: String,
    pub flags: String,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client to one address.
pub struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut req = Request::builder().uri(path).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(
            req.body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?,
        )
        .await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        for _ in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                let stream = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                self.sender = Some(sender);
            }
            let sender = self.sender.as_mut().expect("sender");
            if sender.ready().await.is_err() {
                self.sender = None;
                continue;
            }
            let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
            return Ok(read_reply(response).await);
        }
        Err("connection kept closing".into())
    }
}

pub async fn read_reply(response: Response<Incoming>) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        upstream: headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        flags: headers
            .get("x-response-flags")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Polls `f` until it is true, up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub fn endpoint(addr: SocketAddr, version: &str) -> Endpoint {
    Endpoint {
        address: Some(addr),
        weight: 1,
        labels: BTreeMap::from([("version".to_string(), version.to_string())]),
        workload: Workload {
            name: format!("reviews-{version}"),
            namespace: "default".into(),
            app: "reviews".into(),
            version: version.into(),
            ..Default::default()
        },
        mtls: false,
    }
}

pub fn cluster(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: name.into(),
        service: "reviews.default.svc.cluster.local".into(),
        endpoints,
        ..Default::default()
    }
}

pub fn forward(clusters: &[(&str, u32)]) -> Action {
    Action::Forward(Forward {
        clusters: clusters
            .iter()
            .map(|(c, w)| WeightedCluster {
                cluster: c.to_string(),
                weight: *w,
                ..Default::default()
            })
            .collect(),
        rewrite: None,
    })
}

pub fn config(port: u16, routes: Vec<Route>, clusters: Vec<Cluster>) -> ProxyConfig {
    ProxyConfig {
        version: 1,
        node: Node {
            id: "test".into(),
            role: Role::Sidecar,
            workload: Workload {
                name: "productpage-v1".into(),
                namespace: "default".into(),
                app: "productpage".into(),
                version: "v1".into(),
                ..Default::default()
            },
        },
        listeners: vec![Listener {
            name: "outbound".into(),
            bind: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            direction: Direction::Outbound,
            protocol: ListenerProtocol::Http,
            route_table: Some("routes".into()),
            tcp_routes: vec![],
            tls: None,
            port: None,
            capture: None,
        }],
        route_tables: vec![RouteTable {
            name: "routes".into(),
            virtual_hosts: vec![VirtualHost {
                name: "reviews".into(),
                domains: vec!["reviews".into()],
                routes,
            }],
        }],
        clusters,
        security: Default::default(),
    }
}

/// Starts a proxy and waits until its first listener accepts; returns that listener's
/// address (a port 0 in the config is the port the OS gave). With `stats`, metrics are
/// served on a port the OS picks too (`Proxy::stats_addr`).
pub async fn start(config: ProxyConfig, stats: bool) -> (Proxy, SocketAddr) {
    let name = config.listeners[0].name.clone();
    let options = Options {
        workers: 1,
        admin: None,
        stats: stats.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        access_log: false,
        access_log_json: false,
        header_read_timeout: Duration::from_millis(500),
        mesh_identity: None,
        health: None,
        app_probes: None,
    };
    let proxy = Proxy::start(config, options).expect("proxy starts");
    let addr = proxy.listener_addr(&name).expect("the listener is bound");
    let up = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "proxy did not listen on {addr}");
    (proxy, addr)
}
