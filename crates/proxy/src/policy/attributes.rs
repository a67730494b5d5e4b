//! What the request path knows about a request or connection when it asks for a
//! decision: the verified peer, addresses and ports, SNI, and — for HTTP only — the
//! host, method, path, headers and the verified JWT. Borrowed, so building one costs
//! nothing; a TCP connection is simply one without [`HttpAttributes`].

use std::net::IpAddr;

/// The attributes of one request (or one TCP connection).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestAttributes<'a> {
    /// The verified peer identity without `spiffe://`
    /// (`cluster.local/ns/production/sa/frontend`); `None` without mutual TLS.
    pub source_principal: Option<&'a str>,
    /// The namespace in `source_principal` (see [`RequestAttributes::with_peer`]).
    pub source_namespace: Option<&'a str>,
    /// The directly connected peer's address.
    pub source_ip: Option<IpAddr>,
    /// The original client: X-Forwarded-For's at a gateway, else the peer's.
    pub remote_ip: Option<IpAddr>,
    /// The local address the connection arrived on.
    pub destination_ip: Option<IpAddr>,
    /// The workload (target) port the connection is for.
    pub destination_port: u16,
    /// The TLS server name the client asked for.
    pub sni: Option<&'a str>,
    /// `None` for a TCP connection: then HTTP-only rules never allow, and DENY rules
    /// are evaluated without their HTTP-only parts (Istio's conservative reading).
    pub http: Option<HttpAttributes<'a>>,
}

/// What only an HTTP request has.
#[derive(Debug, Clone, Copy)]
pub struct HttpAttributes<'a> {
    /// `:authority` / Host, as sent.
    pub host: &'a str,
    pub method: &'a str,
    /// The path; anything from `?` on is ignored, as Istio matches paths.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The verified token, if the request carried a valid one.
    pub jwt: Option<&'a JwtIdentity>,
}

/// A verified JWT, as authorization reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwtIdentity {
    pub issuer: String,
    pub subject: String,
    /// The payload; space-delimited claims (`scope`) already split into lists.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl JwtIdentity {
    /// `request.auth.principal`: `iss/sub`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// `request.auth.audiences`: the `aud` claim (a string or a list).
    pub fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        }
    }

    /// `request.auth.presenter`: the `azp` claim.
    pub fn presenter(&self) -> Option<&str> {
        self.claims.get("azp").and_then(serde_json::Value::as_str)
    }
}

impl<'a> RequestAttributes<'a> {
    /// Sets the peer from its verified SPIFFE id (`spiffe://td/ns/NS/sa/SA`, or the
    /// same without the scheme): principal and namespace.
    pub fn with_peer(mut self, spiffe_id: Option<&'a str>) -> Self {
        let principal = spiffe_id
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id))
            .filter(|p| !p.is_empty());
        self.source_principal = principal;
        self.source_namespace = principal.and_then(|p| spiffe_parts(p).map(|(_, ns, _)| ns));
        self
    }
}

/// `td/ns/NS/sa/SA` → `(td, NS, SA)`; `None` for any other shape.
pub fn spiffe_parts(principal: &str) -> Option<(&str, &str, &str)> {
    let (td, rest) = principal.split_once('/')?;
    let rest = rest.strip_prefix("ns/")?;
    let (ns, rest) = rest.split_once('/')?;
    let sa = rest.strip_prefix("sa/")?;
    (!td.is_empty() && !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
        .then_some((td, ns, sa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_sets_principal_and_namespace() {
        let a = RequestAttributes::default()
            .with_peer(Some("spiffe://cluster.local/ns/production/sa/frontend"));
        assert_eq!(
            a.source_principal,
            Some("cluster.local/ns/production/sa/frontend")
        );
        assert_eq!(a.source_namespace, Some("production"));
        let none = RequestAttributes::default().with_peer(Some(""));
        assert_eq!((none.source_principal, none.source_namespace), (None, None));
        assert_eq!(spiffe_parts("cluster.local/ns/a/sa/b/c"), None);
    }
}
