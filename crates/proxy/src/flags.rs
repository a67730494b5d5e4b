//! Envoy's response flags: the short codes (NR, UH, UO, ...) that say what went wrong,
//! carried in access logs and the `response_flags` metric label so that Istio users'
//! debugging habits carry over.

use std::fmt;

/// A set of response flags (usually zero or one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flags(u16);

macro_rules! flags {
    ($($name:ident = $bit:expr, $code:literal, $doc:literal;)*) => {
        impl Flags {
            $(
                #[doc = $doc]
                pub const $name: Flags = Flags(1 << $bit);
            )*
            const TABLE: &'static [(Flags, &'static str)] = &[$((Flags::$name, $code)),*];
        }
    };
}

flags! {
    NO_ROUTE = 0, "NR", "No route matched the request (404), or no TCP route matched.";
    NO_HEALTHY_UPSTREAM = 1, "UH", "The cluster had no healthy endpoint (503).";
    UPSTREAM_OVERFLOW = 2, "UO", "A circuit breaker was open: connection, pending or request limit (503).";
    UPSTREAM_CONNECT_FAILURE = 3, "UF", "Connecting upstream failed (503).";
    RETRIES_EXHAUSTED = 4, "URX", "Every retry was used and the last attempt failed.";
    UPSTREAM_TIMEOUT = 5, "UT", "The upstream did not answer within the route timeout (504).";
    DELAY_INJECTED = 6, "DI", "A fault delay was injected.";
    FAULT_INJECTED = 7, "FI", "A fault abort was injected.";
    DOWNSTREAM_DISCONNECT = 8, "DC", "The client went away before the response completed.";
    UPSTREAM_RESET = 9, "UR", "The upstream reset the connection or stream.";
    UPSTREAM_CONNECTION_TERMINATION = 10, "UC", "The upstream closed the connection mid-response.";
    DOWNSTREAM_PROTOCOL_ERROR = 11, "DPE", "The request broke HTTP's rules, e.g. framed its body two ways (400).";
    RBAC_DENIED = 12, "RBAC", "An AuthorizationPolicy denied the request (403) or the TCP connection (closed).";
}

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);

    /// Adds `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// True when every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Flags {
    /// Comma-separated codes, or `-` when none (Envoy's and Istio's convention).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, code) in Flags::TABLE {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(code)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_like_envoy() {
        assert_eq!(Flags::NONE.to_string(), "-");
        let mut f = Flags::UPSTREAM_CONNECT_FAILURE;
        f.insert(Flags::RETRIES_EXHAUSTED);
        assert_eq!(f.to_string(), "UF,URX");
        assert!(f.contains(Flags::RETRIES_EXHAUSTED));
        assert!(!f.contains(Flags::NO_ROUTE));
    }
}
