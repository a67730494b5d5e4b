//! The server name of a TLS ClientHello, read without terminating TLS (passthrough
//! routing by SNI). Only a ClientHello that fits its first record is read; anything
//! else has no name.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Largest TLS record body.
const MAX_RECORD: usize = 16 * 1024;

/// Peeks (without consuming) until the first TLS record is in, or `limit` passes, and
/// returns the SNI host name of the ClientHello in it.
pub async fn peek_server_name(stream: &TcpStream, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 5 + MAX_RECORD];
    loop {
        let n = tokio::time::timeout_at(deadline.into(), stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= 5 {
            if buf[0] != 0x16 {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if len > MAX_RECORD {
                return None;
            }
            if n >= 5 + len {
                return server_name(&buf[5..5 + len]);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        // More of the record is on its way; peek again shortly.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The host name in a ClientHello handshake message (a record body).
pub fn server_name(hello: &[u8]) -> Option<String> {
    let mut r = Reader(hello);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // version, random
    let session = usize::from(body.u8()?);
    body.take(session)?;
    let suites = usize::from(body.u16()?);
    body.take(suites)?;
    let compression = usize::from(body.u8()?);
    body.take(compression)?;
    let ext_len = usize::from(body.u16()?);
    let mut exts = Reader(body.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let list_len = usize::from(list.u16()?);
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

/// True when `name` is served by `pattern`: equal, or under a `*.domain` wildcard
/// (`*` alone takes any name).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    pattern.strip_prefix('*').is_some_and(|suffix| {
        suffix.starts_with('.')
            && name.len() > suffix.len()
            && name
                .get(name.len() - suffix.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A real ClientHello, as rustls writes it (one record).
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("conn");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello() {
        let hello = client_hello("App.Example.com");
        assert_eq!(hello[0], 0x16);
        let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(
            server_name(&hello[5..5 + len]).as_deref(),
            Some("app.example.com")
        );
        // Truncated or garbage input has no name and does not panic.
        for cut in 0..len {
            let _ = server_name(&hello[5..5 + cut]);
        }
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn wildcards_match_one_or_more_labels_below_the_domain() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*", "anything"));
        assert!(name_matches("A.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("a.example.com", "b.example.com"));
    }
}
