//! The proxy's DNS server for captured apps (Istio's DNS proxying): A and AAAA
//! queries for the mesh's names are answered from the config (a service's virtual
//! IPs, so a ServiceEntry host resolves without cluster DNS); every other query is
//! relayed as it is to the upstream resolver of `/etc/resolv.conf`. UDP only.
//!
//! The wire format is read and written here, only as far as that needs: one
//! question, answers pointing back at it; no EDNS in our own answers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::Shared;

/// How long answers from the config may be cached by the app.
const TTL_SECONDS: u32 = 30;
/// How long the upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries relayed upstream at once; more are answered SERVFAIL at once.
const MAX_RELAYED: usize = 256;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const HEADER: usize = 12;

/// The names a config answers for, by lowercase name.
#[derive(Debug, Default)]
pub struct DnsTable {
    pub bind: Option<SocketAddr>,
    names: HashMap<String, Vec<IpAddr>>,
}

impl DnsTable {
    pub fn compile(dns: &trellis_model::Dns) -> DnsTable {
        DnsTable {
            bind: Some(dns.bind),
            names: dns
                .names
                .iter()
                .map(|n| (n.name.to_ascii_lowercase(), n.addresses.clone()))
                .collect(),
        }
    }
}

/// One question, as read from a query.
#[derive(Debug, PartialEq, Eq)]
struct Question {
    name: String,
    qtype: u16,
    qclass: u16,
    /// Where the question section ends in the query.
    end: usize,
}

/// Reads the single question of a standard query; `None` for anything else.
fn question(query: &[u8]) -> Option<Question> {
    if query.len() < HEADER {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    // A response, or not a standard query (opcode 0), or not exactly one question.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
        return None;
    }
    let mut at = HEADER;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers do not occur in a query's only question.
        if len > 63 {
            return None;
        }
        let label = query.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let fixed = query.get(at..at + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

/// The answer to `query` from `table`, or `None` when the name is not the mesh's
/// (the query goes upstream).
fn answer(table: &DnsTable, query: &[u8]) -> Option<Vec<u8>> {
    let q = question(query)?;
    if q.qclass != CLASS_IN {
        return None;
    }
    let addresses = table.names.get(&q.name)?;
    let records: Vec<&IpAddr> = addresses
        .iter()
        .filter(|ip| match q.qtype {
            TYPE_A => ip.is_ipv4(),
            TYPE_AAAA => ip.is_ipv6(),
            _ => false,
        })
        .collect();
    let mut out = Vec::with_capacity(q.end + records.len() * 28);
    out.extend_from_slice(&query[0..2]);
    // QR, the query's opcode and RD, AA, RA; NOERROR (no records of this type is
    // NODATA: the name exists).
    let rd = query[2] & 0x01;
    out.push(0x84 | rd);
    out.push(0x80);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER..q.end]);
    for ip in records {
        // The name: a pointer to the question's.
        out.extend_from_slice(&[0xc0, HEADER as u8]);
        let (kind, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

/// A SERVFAIL for `query` (the upstream did not answer).
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let q = question(query)?;
    let mut out = Vec::with_capacity(q.end);
    out.extend_from_slice(&query[0..2]);
    out.push(0x80 | (query[2] & 0x01));
    out.push(0x82);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER..q.end]);
    Some(out)
}

/// The first `nameserver` of `/etc/resolv.conf` (port 53).
fn upstream() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Relays `query` to the upstream resolver and returns its reply.
async fn relay(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    // Only the reply to this query (same id).
    (buf.len() >= 2 && buf[..2] == query[..2]).then_some(buf)
}

/// Serves DNS on `bind` for as long as the config asks for it there.
pub async fn run(shared: Arc<Shared>) {
    let mut changes = shared.changes.subscribe();
    let mut running: Option<(SocketAddr, tokio::task::JoinHandle<()>)> = None;
    loop {
        let wanted = shared.snapshot.load().dns.bind;
        if running.as_ref().map(|(addr, _)| Some(*addr)) != Some(wanted) {
            if let Some((_, task)) = running.take() {
                task.abort();
            }
            if let Some(addr) = wanted {
                match UdpSocket::bind(addr).await {
                    Ok(socket) => {
                        let task = tokio::spawn(serve(shared.clone(), Arc::new(socket)));
                        running = Some((addr, task));
                    }
                    Err(e) => tracing::error!(%addr, error = %e, "cannot bind the DNS server"),
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn serve(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let upstream = upstream();
    let relays = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYED));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        if let Some(reply) = answer(&shared.snapshot.load().dns, &query) {
            let _ = socket.send_to(&reply, client).await;
            continue;
        }
        let (Some(up), Ok(permit)) = (upstream, relays.clone().try_acquire_owned()) else {
            if let Some(reply) = server_failure(&query) {
                let _ = socket.send_to(&reply, client).await;
            }
            continue;
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let reply = relay(up, &query).await;
            drop(permit);
            if let Some(reply) = reply.or_else(|| server_failure(&query)) {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn table() -> DnsTable {
        DnsTable::compile(&trellis_model::Dns {
            bind: "127.0.0.1:15053".parse().expect("addr"),
            names: vec![trellis_model::DnsName {
                name: "reviews.default.svc.cluster.local".into(),
                addresses: vec![
                    "10.96.0.20".parse().expect("ip"),
                    "fd00::20".parse().expect("ip"),
                ],
            }],
        })
    }

    #[test]
    fn a_mesh_name_is_answered_with_its_addresses_of_the_asked_type() {
        let q = query(0x1234, "Reviews.default.svc.cluster.local", TYPE_A);
        let reply = answer(&table(), &q).expect("answered");
        assert_eq!(&reply[..2], &[0x12, 0x34], "same id");
        assert_eq!(reply[2] & 0x80, 0x80, "a response");
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1, "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 96, 0, 20]);
        let aaaa = answer(
            &table(),
            &query(7, "reviews.default.svc.cluster.local", TYPE_AAAA),
        )
        .expect("answered");
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 1);
        assert_eq!(aaaa[aaaa.len() - 1], 0x20);
        // Another type for a mesh name: the name exists, no records (NODATA).
        let mx =
            answer(&table(), &query(8, "reviews.default.svc.cluster.local", 15)).expect("answered");
        assert_eq!((mx[3] & 0x0f, mx[7]), (0, 0));
    }

    #[test]
    fn other_names_and_odd_packets_go_upstream() {
        assert!(answer(&table(), &query(1, "example.com", TYPE_A)).is_none());
        assert!(answer(&table(), &[0u8; 5]).is_none());
        let mut truncated = query(1, "reviews.default.svc.cluster.local", TYPE_A);
        truncated.truncate(truncated.len() - 2);
        assert!(answer(&table(), &truncated).is_none());
        let fail = server_failure(&query(9, "example.com", TYPE_A)).expect("a reply");
        assert_eq!(fail[3] & 0x0f, 2, "SERVFAIL");
    }
}
