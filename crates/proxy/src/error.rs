//! One error type for the request path. A [`ProxyError`] says what went wrong (its
//! [`ErrorKind`]), who is at fault, whether a retry may help, and why (its source);
//! [`ErrorKind`] alone decides the status, Envoy's response flag and the reason a
//! local reply and the access log carry. Nothing here is recognised by its text.

use std::fmt;

use http::StatusCode;

use crate::flags::Flags;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request broke HTTP's framing rules (both Content-Length and Transfer-Encoding).
    DownstreamProtocol,
    /// The client's request body could not be read (it went away or sent garbage).
    DownstreamBody,
    /// No route matched.
    NoRoute,
    /// The cluster had no endpoint to send to (none, or all ejected).
    NoHealthyUpstream,
    /// A circuit breaker was open: connections, pending requests, requests or retries.
    Overflow,
    /// The TCP connect or the TLS handshake failed, or timed out, or the cluster's TLS
    /// settings cannot be used.
    ConnectFailure,
    /// The upstream refused the HTTP/2 stream before doing anything with it.
    RefusedStream,
    /// The upstream reset the stream before its response headers.
    UpstreamReset,
    /// The upstream connection ended before the response headers.
    UpstreamClosed,
    /// The route's timeout passed before the response headers.
    UpstreamTimeout,
    /// One attempt's `perTryTimeout` passed (the next attempt may still succeed).
    PerTryTimeout,
}

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Downstream,
    Upstream,
    /// The config in force (no route, no endpoints, unusable TLS settings).
    Config,
    /// The proxy itself.
    Internal,
}

/// Envoy's retry conditions (`retryOn`), as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetryOn(u16);

impl RetryOn {
    pub const NONE: RetryOn = RetryOn(0);
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 3);
    pub const RESET: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const CANCELLED: RetryOn = RetryOn(1 << 7);
    pub const DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    pub const RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 9);
    pub const INTERNAL: RetryOn = RetryOn(1 << 10);
    pub const UNAVAILABLE: RetryOn = RetryOn(1 << 11);

    /// The set named by Envoy's condition names; unknown names are ignored (the
    /// control plane validated them).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> RetryOn {
        let mut set = RetryOn::NONE;
        for name in names {
            set = set
                | match name {
                    "5xx" => RetryOn::FIVE_XX,
                    "gateway-error" => RetryOn::GATEWAY_ERROR,
                    "connect-failure" => RetryOn::CONNECT_FAILURE,
                    "refused-stream" => RetryOn::REFUSED_STREAM,
                    "reset" => RetryOn::RESET,
                    "retriable-4xx" => RetryOn::RETRIABLE_4XX,
                    "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
                    "cancelled" => RetryOn::CANCELLED,
                    "deadline-exceeded" => RetryOn::DEADLINE_EXCEEDED,
                    "resource-exhausted" => RetryOn::RESOURCE_EXHAUSTED,
                    "internal" => RetryOn::INTERNAL,
                    "unavailable" => RetryOn::UNAVAILABLE,
                    _ => RetryOn::NONE,
                };
        }
        set
    }

    /// True when any condition of `other` is in this set.
    pub fn intersects(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

impl ErrorKind {
    /// Who is at fault.
    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::DownstreamProtocol | ErrorKind::DownstreamBody => Fault::Downstream,
            ErrorKind::NoRoute | ErrorKind::NoHealthyUpstream => Fault::Config,
            ErrorKind::Overflow => Fault::Internal,
            ErrorKind::ConnectFailure
            | ErrorKind::RefusedStream
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamClosed
            | ErrorKind::UpstreamTimeout
            | ErrorKind::PerTryTimeout => Fault::Upstream,
        }
    }

    /// Whether a retry is safe, as Envoy's retry conditions say it: the conditions
    /// under which another attempt is made after this error (none: never retried).
    pub fn retried_on(self) -> RetryOn {
        match self {
            ErrorKind::ConnectFailure => {
                RetryOn::CONNECT_FAILURE
                    | RetryOn::FIVE_XX
                    | RetryOn::GATEWAY_ERROR
                    | RetryOn::RESET
            }
            ErrorKind::RefusedStream => RetryOn::REFUSED_STREAM | RetryOn::FIVE_XX | RetryOn::RESET,
            ErrorKind::UpstreamReset | ErrorKind::UpstreamClosed => {
                RetryOn::RESET | RetryOn::FIVE_XX
            }
            ErrorKind::PerTryTimeout => RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET,
            _ => RetryOn::NONE,
        }
    }

    /// True when outlier detection counts it against the endpoint (as a gateway error).
    pub fn is_endpoint_failure(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectFailure | ErrorKind::UpstreamReset | ErrorKind::UpstreamClosed
        )
    }

    /// Envoy's response flag.
    pub fn flag(self) -> Flags {
        match self {
            ErrorKind::DownstreamProtocol => Flags::DOWNSTREAM_PROTOCOL_ERROR,
            ErrorKind::DownstreamBody => Flags::DOWNSTREAM_DISCONNECT,
            ErrorKind::NoRoute => Flags::NO_ROUTE,
            ErrorKind::NoHealthyUpstream => Flags::NO_HEALTHY_UPSTREAM,
            ErrorKind::Overflow => Flags::UPSTREAM_OVERFLOW,
            ErrorKind::ConnectFailure => Flags::UPSTREAM_CONNECT_FAILURE,
            ErrorKind::RefusedStream | ErrorKind::UpstreamReset => Flags::UPSTREAM_RESET,
            ErrorKind::UpstreamClosed => Flags::UPSTREAM_CONNECTION_TERMINATION,
            ErrorKind::UpstreamTimeout | ErrorKind::PerTryTimeout => Flags::UPSTREAM_TIMEOUT,
        }
    }

    /// The status of the local reply.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::DownstreamProtocol | ErrorKind::DownstreamBody => StatusCode::BAD_REQUEST,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::UpstreamTimeout | ErrorKind::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reply body's first words (the source, if any, follows after a colon).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::DownstreamProtocol => {
                "request has both Content-Length and Transfer-Encoding"
            }
            ErrorKind::DownstreamBody => "request body could not be read",
            ErrorKind::NoRoute => "",
            ErrorKind::NoHealthyUpstream => "no healthy upstream",
            ErrorKind::Overflow => "upstream overflow: circuit breaker open",
            ErrorKind::ConnectFailure => "upstream connect error",
            ErrorKind::RefusedStream => "upstream refused the stream",
            ErrorKind::UpstreamReset => "upstream reset before response",
            ErrorKind::UpstreamClosed => "upstream connection closed before response",
            ErrorKind::UpstreamTimeout | ErrorKind::PerTryTimeout => "upstream request timeout",
        }
    }
}

/// An error on the request path, with its cause.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// Who caused it; the kind's usual culprit unless told otherwise.
    pub fault: Fault,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> ProxyError {
        ProxyError {
            kind,
            fault: kind.fault(),
            source: None,
        }
    }

    /// The same error, blamed on `fault`.
    pub fn at_fault(mut self, fault: Fault) -> ProxyError {
        self.fault = fault;
        self
    }

    /// An error caused by `source`.
    pub fn with(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ProxyError {
        ProxyError {
            kind,
            fault: kind.fault(),
            source: Some(source.into()),
        }
    }

    /// Classifies a failure of an upstream HTTP exchange, by the error's type: an
    /// HTTP/2 stream refused, a reset stream, or a connection that ended.
    pub fn from_upstream(e: hyper::Error) -> ProxyError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(h2) = c.downcast_ref::<h2::Error>() {
                if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    return ProxyError::new(ErrorKind::RefusedStream);
                }
                if h2.is_io() || h2.is_go_away() && h2.is_remote() {
                    return ProxyError::with(ErrorKind::UpstreamClosed, e);
                }
                return ProxyError::with(ErrorKind::UpstreamReset, e);
            }
            cause = c.source();
        }
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            return ProxyError::with(ErrorKind::UpstreamClosed, e);
        }
        ProxyError::with(ErrorKind::UpstreamReset, e)
    }

    /// The reply body: the kind's reason, then the cause.
    pub fn detail(&self) -> String {
        match &self.source {
            Some(s) => format!("{}: {s}", self.kind.reason()),
            None => self.kind.reason().to_string(),
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_to_a_set() {
        let set = RetryOn::parse(["connect-failure", "retriable-status-codes", "bogus"]);
        assert!(set.intersects(RetryOn::CONNECT_FAILURE));
        assert!(set.intersects(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(!set.intersects(RetryOn::FIVE_XX | RetryOn::RESET));
        assert_eq!(RetryOn::parse([]), RetryOn::NONE);
    }

    #[test]
    fn each_kind_has_one_status_flag_and_retry_rule() {
        assert_eq!(ErrorKind::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(ErrorKind::NoRoute.flag(), Flags::NO_ROUTE);
        assert_eq!(
            ErrorKind::UpstreamClosed.flag(),
            Flags::UPSTREAM_CONNECTION_TERMINATION
        );
        assert!(
            ErrorKind::ConnectFailure
                .retried_on()
                .intersects(RetryOn::CONNECT_FAILURE)
        );
        assert!(
            !ErrorKind::Overflow
                .retried_on()
                .intersects(RetryOn::FIVE_XX)
        );
        assert_eq!(ErrorKind::ConnectFailure.fault(), Fault::Upstream);
        let e = ProxyError::with(ErrorKind::ConnectFailure, "connect timeout");
        assert_eq!(e.to_string(), "upstream connect error: connect timeout");
    }
}
