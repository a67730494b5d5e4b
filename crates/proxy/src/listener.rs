//! Listeners: accepting connections, telling HTTP from opaque TCP, and serving HTTP/1.1
//! and HTTP/2 (prior knowledge) on one port. Each worker thread binds its own socket
//! (SO_REUSEPORT) and follows config changes: new listeners start, removed ones stop.
//! On a drain (lifecycle.rs) every listener closes and each connection is shut down
//! gracefully: GOAWAY on HTTP/2, `Connection: close` and no keep-alive on HTTP/1.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use trellis_model::{Direction, ListenerProtocol};

use crate::Shared;
use crate::downstream::Connection;
use crate::http::handle;
use crate::snapshot::ListenerRt;
use crate::tls::HANDSHAKE_TIMEOUT;

/// How long a client may take to send its ClientHello on an SNI-routed listener.
const SNI_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head accepted (larger gets 431).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long an idle HTTP connection is kept open once a drain begins: a request that
/// comes within it is served (with `Connection: close`) rather than cut off.
const IDLE_GRACE: Duration = Duration::from_millis(500);

/// Binds a listening socket that other workers can bind too; `only_v6` keeps an
/// IPv6 socket from taking IPv4 (capture listeners bind both families apart, so
/// each connection's original destination is read at its own level).
pub fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    let socket = reserve_with(addr, only_v6 && addr.is_ipv6())?;
    socket.set_nonblocking(true)?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// A socket bound to `addr` (SO_REUSEPORT, so the workers can bind the same port)
/// but not listening: it holds the port without taking connections.
pub fn reserve(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    reserve_with(addr, false)
}

fn reserve_with(addr: SocketAddr, only_v6: bool) -> std::io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if only_v6 {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Keeps this worker's listeners in line with the config, until the process ends or
/// the proxy drains; `bound` hears once the first config's sockets are listening.
pub async fn run_worker(shared: Arc<Shared>, bound: std::sync::mpsc::Sender<()>) {
    let mut bound = Some(bound);
    // Keyed by TLS-ness too, so a listener turning TLS on or off restarts its loop.
    let mut running: HashMap<(String, SocketAddr, bool), JoinHandle<()>> = HashMap::new();
    let mut changes = shared.changes.subscribe();
    loop {
        let snapshot = shared.snapshot.load_full();
        let mut wanted = Vec::new();
        for l in &snapshot.listeners {
            let Some(addr) = l.model.bind else { continue };
            let key = (l.model.name.clone(), addr, l.tls.is_some());
            wanted.push(key.clone());
            if running.contains_key(&key) {
                continue;
            }
            match bind(addr, l.model.capture.is_some()) {
                Ok(socket) => {
                    let handle = tokio::spawn(accept_loop(shared.clone(), l.clone(), socket));
                    running.insert(key, handle);
                }
                Err(e) => {
                    tracing::error!(listener = %l.model.name, %addr, error = %e, "cannot bind listener")
                }
            }
        }
        running.retain(|key, handle| {
            let keep = wanted.contains(key);
            if !keep {
                handle.abort();
            }
            keep
        });
        if let Some(tx) = bound.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return;
            },
            () = shared.drain.started() => break,
        }
    }
    // Draining: the listening sockets close with their accept loops (new connections
    // are refused); the connections already accepted run on this thread's runtime,
    // which must live until the process ends.
    for (_, accepting) in running.drain() {
        accepting.abort();
        let _ = accepting.await;
    }
    shared.drain.listeners_closed();
    std::future::pending::<()>().await;
}

async fn accept_loop(shared: Arc<Shared>, listener: Arc<ListenerRt>, socket: TcpListener) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Counted from the accept on, so a drain waits for it.
        let open = shared.drain.track();
        let _ = stream.set_nodelay(true);
        if listener.capture.is_some() {
            tokio::spawn(crate::capture::serve(
                shared.clone(),
                listener.clone(),
                stream,
            ));
            continue;
        }
        let local = stream.local_addr().unwrap_or(peer);
        let conn = Arc::new(Connection::new(
            shared.clone(),
            listener.clone(),
            peer,
            local,
        ));
        tokio::spawn(async move {
            serve(conn, stream).await;
            drop(open);
        });
    }
}

/// Serves one accepted connection on its listener (TLS, inbound mTLS, HTTP or TCP).
pub async fn serve(conn: Arc<Connection>, stream: TcpStream) {
    if conn.tls {
        serve_tls(conn, stream).await;
        return;
    }
    let stream = if conn.listener.model.direction == Direction::Inbound {
        let mode = conn.current_listener(&conn.shared.snapshot.load()).mtls;
        match crate::inbound::accept(&conn, stream, mode).await {
            crate::inbound::Accepted::Plain(stream) => stream,
            crate::inbound::Accepted::Mesh(tls, h2) => {
                // What the client offered in ALPN says what the bytes carry: HTTP, or
                // (none) opaque TCP.
                match h2 {
                    Some(h2) if conn.listener.model.protocol != ListenerProtocol::Tcp => {
                        serve_http(conn, tls, Some(h2)).await
                    }
                    _ => crate::tcp::proxy(conn, *tls, None).await,
                }
                return;
            }
            crate::inbound::Accepted::Refused => return,
        }
    } else {
        stream
    };
    let is_http = match conn.listener.model.protocol {
        ListenerProtocol::Http => true,
        ListenerProtocol::Tcp => false,
        ListenerProtocol::Auto => sniff_http(&stream).await,
    };
    if !is_http {
        let listener = conn.current_listener(&conn.shared.snapshot.load());
        // TLS routes: read the ClientHello's server name (not consuming it) only when a
        // route asks for one.
        let sni = if listener.tcp_routes.iter().any(|r| !r.sni.is_empty()) {
            crate::sni::peek_server_name(&stream, SNI_TIMEOUT).await
        } else {
            None
        };
        crate::tcp::proxy(conn, stream, sni).await;
        return;
    }
    serve_http(conn, stream, None).await;
}

/// Terminates TLS with the certificates of the config in force now (so a swap applies
/// to new connections), then serves HTTP as the ALPN says.
async fn serve_tls(conn: Arc<Connection>, stream: TcpStream) {
    let tls = conn
        .current_listener(&conn.shared.snapshot.load())
        .tls
        .clone()
        .or_else(|| conn.listener.tls.clone());
    let Some(tls) = tls else { return };
    let metrics = &conn.shared.metrics;
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            metrics.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
            return;
        }
    };
    metrics.tls_handshakes.fetch_add(1, Ordering::Relaxed);
    // A client certificate is only present when this listener asked for and verified it.
    if let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        && let Some(cert) = crate::peer::PeerCert::from_der(leaf)
    {
        let xfcc = HeaderValue::from_str(&cert.xfcc()).ok();
        if let Some(xfcc) = xfcc {
            let _ = conn.peer_cert.set((cert, xfcc));
        }
    }
    let h2 = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Some(true),
        Some(_) => Some(false),
        // No ALPN: tell HTTP/1.1 from the HTTP/2 preface, as on plain listeners.
        None => None,
    };
    serve_http(conn, stream, h2).await;
}

/// Serves HTTP/1.1 and HTTP/2 on one connection: `h2` forces one when known (ALPN),
/// otherwise the first bytes decide.
async fn serve_http<I>(conn: Arc<Connection>, io: I, h2: Option<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conn.shared.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = match h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    // HTTP/1 framing is followed on the raw bytes (known HTTP/2 is only passed on).
    let io = crate::framing::Guarded::new(io, conn.framing.clone(), h2 != Some(true));
    let drain = conn.shared.drain.clone();
    let requests = Arc::new(crate::lifecycle::Requests::default());
    let service = {
        let requests = requests.clone();
        hyper::service::service_fn(move |req| {
            let waiting = requests.start();
            let response = handle(conn.clone(), req);
            async move {
                let response = response.await;
                drop(waiting);
                response
            }
        })
    };
    let mut connection =
        std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    let draining = requests.shutdown_point(&drain, IDLE_GRACE);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        () = draining => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// Waits (briefly) for the first bytes and says whether they look like HTTP.
async fn sniff_http(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 24];
    let peeked = tokio::time::timeout(Duration::from_millis(500), stream.peek(&mut buf)).await;
    match peeked {
        Ok(Ok(n)) if n > 0 => looks_like_http(&buf[..n]),
        // Server-first protocols (the client waits): treat as TCP.
        _ => false,
    }
}

/// True for an HTTP/1 method token followed by a space, or the HTTP/2 preface.
pub fn looks_like_http(bytes: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI * HTTP/2",
    ];
    METHODS
        .iter()
        .any(|m| bytes.starts_with(m) || (bytes.len() < m.len() && m.starts_with(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_other_bytes() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"PRI * HTTP/2.0\r\n"));
        assert!(!looks_like_http(b"\x16\x03\x01\x02\x00"));
        assert!(!looks_like_http(b"SSH-2.0-OpenSSH"));
    }
}
