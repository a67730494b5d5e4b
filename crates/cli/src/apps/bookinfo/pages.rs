//! The bookstore's fixed content (the book, its reviews) and productpage's HTML.
//! Everything that came from another service is escaped before it is written.

use std::fmt::Write as _;

use serde_json::Value;

/// Content type of every page.
pub const HTML: &str = "text/html; charset=utf-8";
/// The book.
pub const TITLE: &str = "The Comedy of Errors";
/// The book's summary.
pub const SUMMARY: &str = "One of William Shakespeare's early plays: two sets of identical twins, \
    separated at birth, and a day of mistaken identities in Ephesus.";
/// The reviews reviews serves: (reviewer, text).
pub const REVIEWS: &[(&str, &str)] = &[
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// The index page.
pub const INDEX: &str = "<!doctype html>
<html><head><meta charset=\"utf-8\"><title>Simple Bookstore App</title></head>
<body><h1>Simple Bookstore App</h1>
<p>A small application of four services: productpage, details, reviews and ratings.</p>
<p><a href=\"/productpage\">The product page</a> &middot; <a href=\"/api/v1/products/0\">its JSON</a></p>
</body></html>
";

/// What productpage got from one upstream: its JSON and version, or why not.
#[derive(Debug)]
pub struct Fetched {
    pub service: &'static str,
    pub outcome: Result<(Value, Option<String>), String>,
}

/// The product page for `details` and `reviews`, served by productpage `version`.
pub fn product_page(version: &str, details: &Fetched, reviews: &Fetched) -> String {
    let mut page = String::with_capacity(2048);
    let _ = write!(
        page,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Simple Bookstore App</title></head>\n\
         <body>\n<h1>{TITLE}</h1>\n<p>{SUMMARY}</p>\n<h2>Book Details</h2>\n"
    );
    match &details.outcome {
        Ok((value, _)) => {
            page.push_str("<dl>\n");
            for (label, key) in [
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            ] {
                let _ = writeln!(
                    page,
                    "<dt>{label}</dt><dd>{}</dd>",
                    escape(&text(&value[key]))
                );
            }
            page.push_str("</dl>\n");
        }
        Err(reason) => unavailable(&mut page, details.service, reason),
    }
    page.push_str("<h2>Book Reviews</h2>\n");
    match &reviews.outcome {
        Ok((value, _)) => {
            for review in value["reviews"].as_array().into_iter().flatten() {
                let _ = write!(
                    page,
                    "<blockquote>\n<p>{}</p>\n<small>{}</small>\n",
                    escape(&text(&review["text"])),
                    escape(&text(&review["reviewer"]))
                );
                rating(&mut page, &review["rating"]);
                page.push_str("</blockquote>\n");
            }
        }
        Err(reason) => unavailable(&mut page, reviews.service, reason),
    }
    let served_by = |f: &Fetched| {
        f.outcome
            .as_ref()
            .ok()
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| "-".into())
    };
    let _ = write!(
        page,
        "<p><small>served by productpage {}, details {}, reviews {}</small></p>\n</body></html>\n",
        escape(version),
        escape(&served_by(details)),
        escape(&served_by(reviews))
    );
    page
}

/// Stars for a review's `rating` (`{stars, color}` or `{error}`); nothing when absent.
fn rating(page: &mut String, rating: &Value) {
    if let Some(error) = rating["error"].as_str() {
        let _ = writeln!(page, "<p class=\"error\">{}</p>", escape(error));
    } else if let Some(stars) = rating["stars"].as_u64() {
        let stars = stars.min(5) as usize;
        let color = match rating["color"].as_str() {
            Some("red") => "red",
            _ => "black",
        };
        let _ = writeln!(
            page,
            "<p class=\"stars\" style=\"color: {color}\">{}{}</p>",
            "★".repeat(stars),
            "☆".repeat(5 - stars)
        );
    }
}

fn unavailable(page: &mut String, service: &str, reason: &str) {
    let _ = writeln!(
        page,
        "<p class=\"error\">{service} unavailable <small>({})</small></p>",
        escape(reason)
    );
}

/// A JSON value as display text: strings bare, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_shows_coloured_stars_and_escapes_upstream_text() {
        let details = Fetched {
            service: "details",
            outcome: Ok((
                json!({"type": "<b>paperback</b>", "pages": 200}),
                Some("v1".into()),
            )),
        };
        let reviews = Fetched {
            service: "reviews",
            outcome: Ok((
                json!({"reviews": [{"reviewer": "R1", "text": "Fun", "rating": {"stars": 4, "color": "red"}}]}),
                Some("v3".into()),
            )),
        };
        let page = product_page("v1", &details, &reviews);
        assert!(page.contains("&lt;b&gt;paperback"), "{page}");
        assert!(page.contains("style=\"color: red\">★★★★☆"), "{page}");
        assert!(page.contains("reviews v3"), "{page}");
    }

    #[test]
    fn failed_upstream_is_reported_on_the_page() {
        let details = Fetched {
            service: "details",
            outcome: Err("connection refused".into()),
        };
        let reviews = Fetched {
            service: "reviews",
            outcome: Err("status 503".into()),
        };
        let page = product_page("v1", &details, &reviews);
        assert!(page.contains("details unavailable"), "{page}");
        assert!(page.contains("reviews unavailable"), "{page}");
    }
}
