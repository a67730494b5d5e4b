//! Compiled string and request matchers: regexes are built once per config, so a
//! request only compares.

use regex::Regex;
use trellis_model::{HeaderMatch, RouteMatch, StringMatch};

/// A [`StringMatch`] ready to run.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Matcher {
    /// Compiles; regexes are anchored to match the whole value, as Envoy's do.
    pub fn compile(m: &StringMatch) -> Result<Self, String> {
        Ok(match m {
            StringMatch::Exact(s) => Matcher::Exact(s.clone()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatch::Regex(r) => Matcher::Regex(
                Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("regex `{r}`: {e}"))?,
            ),
        })
    }

    /// Compiles a case-insensitive matcher (VirtualService `ignoreUriCase`).
    pub fn compile_ignore_case(m: &StringMatch) -> Result<Self, String> {
        Ok(match m {
            StringMatch::Exact(s) => Matcher::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.to_ascii_lowercase()),
            StringMatch::Regex(r) => Matcher::Regex(
                Regex::new(&format!("(?i)^(?:{r})$")).map_err(|e| format!("regex `{r}`: {e}"))?,
            ),
        })
    }

    /// True when `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value == s,
            Matcher::Prefix(s) => value.starts_with(s.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// A header or query-parameter condition.
#[derive(Debug, Clone)]
pub struct FieldMatcher {
    pub name: String,
    pub value: Option<Matcher>,
    pub invert: bool,
}

impl FieldMatcher {
    fn compile(h: &HeaderMatch, lowercase_name: bool) -> Result<Self, String> {
        Ok(FieldMatcher {
            name: if lowercase_name {
                h.name.to_ascii_lowercase()
            } else {
                h.name.clone()
            },
            value: h.value.as_ref().map(Matcher::compile).transpose()?,
            invert: h.invert,
        })
    }

    fn holds(&self, value: Option<&str>) -> bool {
        let hit = match (value, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        };
        hit != self.invert
    }
}

/// What a request offers to matching, read once per request.
pub struct RequestView<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: &'a http::HeaderMap,
    pub port: u16,
}

/// A [`RouteMatch`] ready to run.
#[derive(Debug, Clone)]
pub struct RequestMatcher {
    uri: Option<Matcher>,
    ignore_uri_case: bool,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<FieldMatcher>,
    query: Vec<FieldMatcher>,
    port: Option<u16>,
}

impl RequestMatcher {
    /// Compiles one match block.
    pub fn compile(m: &RouteMatch) -> Result<Self, String> {
        let uri = match &m.uri {
            Some(u) if m.ignore_uri_case => Some(Matcher::compile_ignore_case(u)?),
            Some(u) => Some(Matcher::compile(u)?),
            None => None,
        };
        Ok(RequestMatcher {
            uri,
            ignore_uri_case: m.ignore_uri_case,
            scheme: m.scheme.as_ref().map(Matcher::compile).transpose()?,
            method: m.method.as_ref().map(Matcher::compile).transpose()?,
            authority: m.authority.as_ref().map(Matcher::compile).transpose()?,
            headers: m
                .headers
                .iter()
                .map(|h| FieldMatcher::compile(h, true))
                .collect::<Result<_, _>>()?,
            query: m
                .query_params
                .iter()
                .map(|h| FieldMatcher::compile(h, false))
                .collect::<Result<_, _>>()?,
            port: m.port,
        })
    }

    /// True when every condition holds for `req`.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(port) = self.port
            && port != req.port
        {
            return false;
        }
        if let Some(uri) = &self.uri {
            let ok = if self.ignore_uri_case && !matches!(uri, Matcher::Regex(_)) {
                uri.matches(&req.path.to_ascii_lowercase())
            } else {
                uri.matches(req.path)
            };
            if !ok {
                return false;
            }
        }
        if self.method.as_ref().is_some_and(|m| !m.matches(req.method))
            || self.scheme.as_ref().is_some_and(|m| !m.matches(req.scheme))
            || self
                .authority
                .as_ref()
                .is_some_and(|m| !m.matches(req.authority))
        {
            return false;
        }
        for h in &self.headers {
            let value = req
                .headers
                .get(h.name.as_str())
                .and_then(|v| v.to_str().ok());
            if !h.holds(value) {
                return false;
            }
        }
        for q in &self.query {
            let value = query_value(req.query, &q.name);
            if !q.holds(value) {
                return false;
            }
        }
        true
    }

    /// The literal prefix this matcher matched, for `rewrite.uri` (prefix replacement).
    pub fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(Matcher::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// The first value of `name` in a query string.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        RequestView {
            path,
            query,
            method: "GET",
            authority: "reviews",
            scheme: "http",
            headers,
            port: 9080,
        }
    }

    #[test]
    fn header_exact_and_without_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user-type", http::HeaderValue::from_static("beta"));
        let m = RequestMatcher::compile(&RouteMatch {
            headers: vec![HeaderMatch {
                name: "X-User-Type".into(),
                value: Some(StringMatch::Exact("beta".into())),
                invert: false,
            }],
            ..Default::default()
        })
        .expect("compiles");
        assert!(m.matches(&view("/", &headers)));
        assert!(!m.matches(&view("/", &http::HeaderMap::new())));
        let without = RequestMatcher::compile(&RouteMatch {
            headers: vec![HeaderMatch {
                name: "x-user-type".into(),
                value: None,
                invert: true,
            }],
            ..Default::default()
        })
        .expect("compiles");
        assert!(!without.matches(&view("/", &headers)));
        assert!(without.matches(&view("/", &http::HeaderMap::new())));
    }

    #[test]
    fn uri_regex_is_anchored_and_case_can_be_ignored() {
        let headers = http::HeaderMap::new();
        let m = RequestMatcher::compile(&RouteMatch {
            uri: Some(StringMatch::Regex("/api/v[0-9]+".into())),
            ..Default::default()
        })
        .expect("compiles");
        assert!(m.matches(&view("/api/v2", &headers)));
        assert!(!m.matches(&view("/api/v2/x", &headers)));
        let ci = RequestMatcher::compile(&RouteMatch {
            uri: Some(StringMatch::Prefix("/Static".into())),
            ignore_uri_case: true,
            ..Default::default()
        })
        .expect("compiles");
        assert!(ci.matches(&view("/STATIC/a.css", &headers)));
    }

    #[test]
    fn query_params_match() {
        let headers = http::HeaderMap::new();
        let m = RequestMatcher::compile(&RouteMatch {
            query_params: vec![HeaderMatch {
                name: "v".into(),
                value: Some(StringMatch::Exact("2".into())),
                invert: false,
            }],
            ..Default::default()
        })
        .expect("compiles");
        assert!(m.matches(&view("/x?a=1&v=2", &headers)));
        assert!(!m.matches(&view("/x?v=3", &headers)));
    }
}
