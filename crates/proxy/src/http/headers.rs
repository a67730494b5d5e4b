//! Header edits on the way up and back: hop-by-hop headers removed (RFC 9110
//! §7.6.1), `x-forwarded-*` and `x-request-id` set as Envoy sets them, the gateway's
//! `X-Forwarded-Client-Cert` from the verified client certificate only, and the
//! route's and destination's `headers` operations.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use trellis_model::{Direction, HeaderOps, WeightedCluster};

use crate::body::ProxyBody;
use crate::downstream::Connection;
use crate::rand;
use crate::snapshot::{ClusterRt, RouteRt};

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Hop-by-hop headers that are never forwarded (besides Connection and those it lists).
const HOP_BY_HOP: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TRAILER,
];

/// The request headers for the upstream hop.
pub fn prepare_request(
    headers: &mut HeaderMap,
    conn: &Connection,
    direction: Direction,
    route: &RouteRt,
    destination: &HeaderOps,
) {
    let upgrade = is_upgrade(headers);
    strip_hop_by_hop(headers, upgrade);
    // A terminated TLS connection knows its scheme; otherwise keep what a front proxy said.
    if conn.tls || !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.scheme()));
    }
    if direction == Direction::Gateway {
        // The client's address, formatted once per connection.
        let ip = conn.peer_ip.get_or_init(|| {
            HeaderValue::from_str(&conn.peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        });
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
        // Istio's gateway default (SANITIZE_SET): a client never sets this header
        // itself; it comes only from a certificate this listener verified.
        headers.remove(X_FORWARDED_CLIENT_CERT);
        if let Some((_, xfcc)) = conn.peer_cert.get() {
            headers.insert(X_FORWARDED_CLIENT_CERT, xfcc.clone());
        }
    }
    apply(headers, &route.model.request_headers);
    apply(headers, destination);
}

/// The request's `x-request-id`, made (a random UUID) when the client sent none.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    headers
        .entry(X_REQUEST_ID)
        .or_insert_with(new_request_id)
        .clone()
}

/// The upstream's response as the downstream gets it.
pub fn prepare_response(
    response: Response<Incoming>,
    route: &RouteRt,
    destination: &WeightedCluster,
    cluster: &Arc<ClusterRt>,
    cors_origin: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(
        &mut parts.headers,
        parts.status == StatusCode::SWITCHING_PROTOCOLS,
    );
    apply(&mut parts.headers, &route.model.response_headers);
    apply(&mut parts.headers, &destination.response_headers);
    if let (Some(policy), Some(origin)) = (&route.model.cors, cors_origin) {
        super::cors::decorate(policy, origin, &mut parts.headers);
    }
    if let Some(cookie) = super::forward::new_affinity_cookie(cluster) {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    Response::from_parts(parts, ProxyBody::Streaming(body))
}

/// Applies `remove`, then `set`, then `add`.
fn apply(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// True when the headers ask for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes headers that belong to one hop only; `keep_upgrade` keeps an upgrade's.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Usually there is none: one pass over the names (no hashing) says so.
    let present = headers.keys().any(|k| {
        k == header::CONNECTION || k == header::TE || k == header::UPGRADE || HOP_BY_HOP.contains(k)
    });
    if !present && !keep_upgrade {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    if let Some(te) = headers.get(header::TE)
        && te.as_bytes() != b"trailers"
    {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// A random (version 4) UUID, as Envoy puts in `x-request-id`.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (rand::next_u64(), rand::next_u64());
    // 32 random hex digits; the version nibble is 4 and the variant bits are 10.
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        *d = HEX[(word >> ((15 - i % 16) * 4) & 0xf) as usize];
    }
    digits[12] = b'4';
    digits[16] = HEX[8 | (b >> 60 & 0x3) as usize];
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (group, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        let from = [0, 8, 12, 16, 20][group];
        text[at..at + len].copy_from_slice(&digits[from..from + len]);
        at += len + 1;
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids_and_differ() {
        let ids: Vec<String> = (0..200)
            .map(|_| new_request_id().to_str().expect("ascii").to_string())
            .collect();
        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                groups.iter().all(|g| g
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn hop_by_hop_headers_are_stripped_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["te", "x-kept"]);

        let mut plain = HeaderMap::new();
        plain.insert("x-kept", HeaderValue::from_static("1"));
        plain.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(
            plain.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );

        let mut upgrade = HeaderMap::new();
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(
            upgrade.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(upgrade.contains_key(header::UPGRADE));
    }
}
