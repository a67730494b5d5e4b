//! The leaf comparisons of policy evaluation, over bytes and without allocating:
//! Istio's string forms (with `*` meaning non-empty, or merely present for headers),
//! hosts (case-insensitive, an exact host also with `:port`), path templates, and
//! JSON claims (a string, or a list of strings any of which matches). Short literals
//! and single patterns are stored inline, so most comparisons follow no pointer.

use trellis_model::security::{StringPattern, TemplatePiece};

/// Literals up to this many bytes live inline.
const INLINE: usize = 30;

/// A literal: inline when short, else on the heap.
#[derive(Debug, Clone)]
pub enum Lit {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Lit {
    pub fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut data = [0; INLINE];
            data[..bytes.len()].copy_from_slice(bytes);
            Lit::Inline(bytes.len() as u8, data)
        } else {
            Lit::Heap(bytes.into())
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Lit::Inline(len, data) => &data[..usize::from(*len)],
            Lit::Heap(b) => b,
        }
    }
}

/// One value, inline, or several: what a field lists.
#[derive(Debug, Clone)]
pub enum Set<T> {
    One(T),
    Many(Box<[T]>),
}

impl<T: Clone> Set<T> {
    pub fn new(items: Vec<T>) -> Self {
        match <[T; 1]>::try_from(items) {
            Ok([one]) => Set::One(one),
            Err(items) => Set::Many(items.into_boxed_slice()),
        }
    }

    #[inline(always)]
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        match self {
            Set::One(t) => f(t),
            Set::Many(ts) => {
                for t in ts.iter() {
                    if f(t) {
                        return true;
                    }
                }
                false
            }
        }
    }

    pub fn all(&self, f: impl Fn(&T) -> bool) -> bool {
        match self {
            Set::One(t) => f(t),
            Set::Many(ts) => ts.iter().all(f),
        }
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            Set::One(t) => std::slice::from_ref(t),
            Set::Many(ts) => ts,
        }
    }
}

/// A compiled string pattern.
#[derive(Debug, Clone)]
pub enum Text {
    Exact(Lit),
    Prefix(Lit),
    Suffix(Lit),
    /// Any non-empty value (Istio's `*`: `.+`).
    NonEmpty,
}

impl Text {
    pub fn new(p: &StringPattern) -> Self {
        let bytes = |s: &str| Lit::new(s.as_bytes());
        match p {
            StringPattern::Exact(s) => Text::Exact(bytes(s)),
            StringPattern::Prefix(s) => Text::Prefix(bytes(s)),
            StringPattern::Suffix(s) => Text::Suffix(bytes(s)),
            StringPattern::Presence => Text::NonEmpty,
        }
    }

    /// True when `value` matches.
    #[inline(always)]
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Text::Exact(s) => {
                let s = s.as_bytes();
                value.len() == s.len() && edges_equal(value, s) && value == s
            }
            Text::Prefix(s) => {
                let s = s.as_bytes();
                value.len() >= s.len() && edges_equal(value, s) && value.starts_with(s)
            }
            Text::Suffix(s) => {
                let s = s.as_bytes();
                value.len() >= s.len()
                    && edges_equal(&value[value.len() - s.len()..], s)
                    && value.ends_with(s)
            }
            Text::NonEmpty => !value.is_empty(),
        }
    }

    /// For a header that is there: `*` means present, even empty.
    #[inline]
    pub fn matches_present(&self, value: &[u8]) -> bool {
        matches!(self, Text::NonEmpty) || self.matches(value)
    }
}

/// The first and last bytes of `pattern` against the same places of `value` (which is
/// at least as long): most mismatches are refused here, without a `memcmp` call.
#[inline(always)]
fn edges_equal(value: &[u8], pattern: &[u8]) -> bool {
    match (pattern.first(), pattern.last()) {
        (Some(first), Some(last)) => {
            value.first() == Some(first) && value.get(pattern.len() - 1) == Some(last)
        }
        _ => true,
    }
}

/// True when any pattern matches.
#[inline(always)]
pub fn any_text(patterns: &Set<Text>, value: &[u8]) -> bool {
    match patterns {
        Set::One(p) => p.matches(value),
        Set::Many(ps) => {
            for p in ps.iter() {
                if p.matches(value) {
                    return true;
                }
            }
            false
        }
    }
}

/// A compiled `hosts` entry, matched against `:authority` ignoring ASCII case.
#[derive(Debug, Clone)]
pub enum Host {
    /// Also matches `host:port` (Istio's `(?i)host(:[0-9]+)?`).
    Exact(Lit),
    Prefix(Lit),
    Suffix(Lit),
    /// `*`: any authority.
    Any,
}

impl Host {
    pub fn new(p: &StringPattern) -> Self {
        let lower = |s: &str| Lit::new(s.to_ascii_lowercase().as_bytes());
        match p {
            StringPattern::Exact(s) => Host::Exact(lower(s)),
            StringPattern::Prefix(s) => Host::Prefix(lower(s)),
            StringPattern::Suffix(s) => Host::Suffix(lower(s)),
            StringPattern::Presence => Host::Any,
        }
    }

    #[inline]
    pub fn matches(&self, authority: &[u8]) -> bool {
        match self {
            Host::Any => true,
            Host::Prefix(p) => {
                let p = p.as_bytes();
                authority.len() >= p.len() && authority[..p.len()].eq_ignore_ascii_case(p)
            }
            Host::Suffix(s) => {
                let s = s.as_bytes();
                authority.len() >= s.len()
                    && authority[authority.len() - s.len()..].eq_ignore_ascii_case(s)
            }
            Host::Exact(h) => {
                let h = h.as_bytes();
                if authority.len() < h.len() || !authority[..h.len()].eq_ignore_ascii_case(h) {
                    return false;
                }
                match &authority[h.len()..] {
                    [] => true,
                    [b':', port @ ..] => !port.is_empty() && port.iter().all(u8::is_ascii_digit),
                    _ => false,
                }
            }
        }
    }
}

/// A compiled `paths` entry.
#[derive(Debug, Clone)]
pub enum Path {
    Text(Text),
    Template(Box<[TemplatePiece]>),
}

impl Path {
    /// True when `path` (query string already removed) matches.
    #[inline]
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            Path::Text(t) => t.matches(path),
            Path::Template(pieces) => template_matches(pieces, path),
        }
    }
}

/// Matches a template: literals as written, `{*}` one non-empty segment, `{**}` any
/// remainder followed only by literals (so it can be checked from the end).
fn template_matches(pieces: &[TemplatePiece], mut path: &[u8]) -> bool {
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            TemplatePiece::Literal(l) => match path.strip_prefix(l.as_bytes()) {
                Some(rest) => path = rest,
                None => return false,
            },
            TemplatePiece::One => {
                let end = path.iter().position(|b| *b == b'/').unwrap_or(path.len());
                if end == 0 {
                    return false;
                }
                path = &path[end..];
            }
            TemplatePiece::Rest => {
                // Only literals follow: they must end the path.
                let mut tail_len = 0;
                for p in &pieces[i + 1..] {
                    match p {
                        TemplatePiece::Literal(l) => tail_len += l.len(),
                        _ => return false,
                    }
                }
                if path.len() < tail_len {
                    return false;
                }
                let mut tail = &path[path.len() - tail_len..];
                for p in &pieces[i + 1..] {
                    if let TemplatePiece::Literal(l) = p {
                        match tail.strip_prefix(l.as_bytes()) {
                            Some(rest) => tail = rest,
                            None => return false,
                        }
                    }
                }
                return true;
            }
        }
    }
    path.is_empty()
}

/// The value at `path` in a JWT's claims: matched when it is a string that matches, or
/// a list holding such a string.
pub fn claim_matches(
    claims: &serde_json::Map<String, serde_json::Value>,
    path: &[String],
    patterns: &Set<Text>,
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut value = match claims.get(first) {
        Some(v) => v,
        None => return false,
    };
    for key in rest {
        match value.get(key) {
            Some(v) => value = v,
            None => return false,
        }
    }
    match value {
        serde_json::Value::String(s) => any_text(patterns, s.as_bytes()),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(|s| any_text(patterns, s.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_model::security::parse_template;

    fn template(t: &str) -> Path {
        Path::Template(parse_template(t).expect("template").into_boxed_slice())
    }

    #[test]
    fn istio_wildcards_mean_non_empty_except_for_present_headers() {
        assert!(Text::NonEmpty.matches(b"x"));
        assert!(!Text::NonEmpty.matches(b""));
        assert!(Text::NonEmpty.matches_present(b""));
        assert!(Text::Prefix(Lit::new(b"/api/")).matches(b"/api/items"));
        assert!(Text::Suffix(Lit::new(b".png")).matches(b"/a.png"));
        let long = Lit::new(&[b'x'; 64]);
        assert!(matches!(long, Lit::Heap(_)) && long.as_bytes().len() == 64);
    }

    #[test]
    fn exact_hosts_match_with_a_port_and_any_case() {
        let h = Host::new(&StringPattern::Exact("Shop.Example".into()));
        assert!(h.matches(b"shop.example"));
        assert!(h.matches(b"SHOP.example:8080"));
        assert!(!h.matches(b"shop.example:"));
        assert!(!h.matches(b"shop.example.evil"));
        let s = Host::new(&StringPattern::Suffix(".example".into()));
        assert!(s.matches(b"api.EXAMPLE"));
    }

    #[test]
    fn templates_match_segments() {
        let one = template("/foo/{*}");
        assert!(one.matches(b"/foo/bar"));
        assert!(!one.matches(b"/foo/bar/baz"));
        assert!(!one.matches(b"/foo/"));
        let rest = template("/foo/{**}/");
        assert!(rest.matches(b"/foo/bar/"));
        assert!(rest.matches(b"/foo/bar/baz.txt/"));
        assert!(!rest.matches(b"/foo/bar"));
        let mixed = template("/foo/{*}/bar/{**}");
        assert!(mixed.matches(b"/foo/buzz/bar/"));
        assert!(mixed.matches(b"/foo/buzz/bar/baz"));
        assert!(!mixed.matches(b"/foo/buzz/qux/baz"));
    }

    #[test]
    fn claims_match_strings_and_lists_at_nested_paths() {
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"groups":["dev","admins"],"org":{"team":"payments"},"level":3}"#,
        )
        .expect("json");
        let admins = Set::One(Text::new(&StringPattern::Exact("admins".into())));
        assert!(claim_matches(&claims, &["groups".into()], &admins));
        let pay = Set::One(Text::new(&StringPattern::Prefix("pay".into())));
        assert!(claim_matches(&claims, &["org".into(), "team".into()], &pay));
        let any = Set::new(vec![Text::NonEmpty, Text::NonEmpty]);
        assert!(!claim_matches(&claims, &["level".into()], &any));
        assert!(!claim_matches(&claims, &["missing".into()], &any));
    }
}
