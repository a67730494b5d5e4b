//! VirtualService `rewrite`: the path (the matched prefix replaced, the whole path
//! for other matches, or `uriRegexRewrite`) and the authority, before forwarding.

use http::Uri;
use http::header::{self, HeaderValue};

use crate::snapshot::RouteRt;

/// Rewrites the request head as `rewrite` says.
pub fn apply(parts: &mut http::request::Parts, route: &RouteRt, rewrite: &trellis_model::Rewrite) {
    let (path, query) = (parts.uri.path(), parts.uri.query().unwrap_or(""));
    let rewritten = if let Some(uri) = &rewrite.uri {
        // With a prefix match, only the matched prefix is replaced; otherwise the whole path.
        let matched_prefix = route
            .matchers
            .iter()
            .find_map(|m| m.uri_prefix().filter(|p| path.starts_with(*p)));
        Some(match matched_prefix {
            Some(prefix) => format!("{uri}{}", &path[prefix.len()..]),
            None => uri.clone(),
        })
    } else {
        route
            .uri_regex
            .as_ref()
            .map(|(re, sub)| re.replace_all(path, sub.as_str()).into_owned())
    };
    if let Some(rewritten) = rewritten {
        let p = if query.is_empty() {
            rewritten
        } else {
            format!("{rewritten}?{query}")
        };
        if let Ok(pq) = p.parse::<http::uri::PathAndQuery>() {
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(uri_parts) {
                parts.uri = uri;
            }
        }
    }
    if let Some(new_authority) = &rewrite.authority
        && let Ok(v) = HeaderValue::from_str(new_authority)
    {
        parts.headers.insert(header::HOST, v);
        if parts.uri.authority().is_some() {
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.authority = new_authority.parse().ok();
            if let Ok(uri) = Uri::from_parts(uri_parts) {
                parts.uri = uri;
            }
        }
    }
}
