//! productpage: the bookstore's front. It fetches details and reviews in parallel,
//! forwarding the inbound tracing and routing headers, and renders the result as
//! HTML (`/productpage`) or JSON (`/api/v1/products/0`). A failed upstream becomes
//! "details unavailable" or "reviews unavailable"; the page itself is still a 200.

use http::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::pages::{self, Fetched};
use super::{App, not_found, to_json};
use crate::apps::body::Body;

/// The only product in the store.
const PRODUCT: u64 = 0;

pub(super) async fn handle<B>(app: &App, request: &Request<B>) -> Response<Body> {
    let id = &app.identity;
    match request.uri().path() {
        "/" | "/index.html" => id.respond(
            StatusCode::OK,
            pages::HTML,
            Body::full(pages::INDEX.as_bytes()),
        ),
        "/api/v1/products" => id.json(
            StatusCode::OK,
            to_json(
                &json!([{"id": PRODUCT, "title": pages::TITLE, "descriptionHtml": pages::SUMMARY}]),
            ),
        ),
        "/productpage" => {
            let (details, reviews) = fetch(app, request).await;
            let html = pages::product_page(&id.version, &details, &reviews);
            id.respond(StatusCode::OK, pages::HTML, Body::full(html))
        }
        "/api/v1/products/0" => {
            let (details, reviews) = fetch(app, request).await;
            let body = json!({
                "id": PRODUCT,
                "title": pages::TITLE,
                "details": details.json_or_error(),
                "reviews": reviews.json_or_error(),
                "versions": {
                    "productpage": id.version,
                    "details": details.version(),
                    "reviews": reviews.version(),
                },
            });
            id.json(StatusCode::OK, to_json(&body))
        }
        _ => not_found(id),
    }
}

/// Details and reviews of the product, fetched concurrently.
async fn fetch<B>(app: &App, request: &Request<B>) -> (Fetched, Fetched) {
    let inbound = request.headers();
    let details_path = format!("/details/{PRODUCT}");
    let reviews_path = format!("/reviews/{PRODUCT}");
    let (details, reviews) = tokio::join!(
        app.upstreams.get("details", &details_path, inbound),
        app.upstreams.get("reviews", &reviews_path, inbound),
    );
    (
        Fetched::from_reply("details", details),
        Fetched::from_reply("reviews", reviews),
    )
}

impl Fetched {
    fn from_reply(
        service: &'static str,
        reply: anyhow::Result<crate::apps::upstream::Reply>,
    ) -> Self {
        let outcome = match reply {
            Err(error) => Err(format!("{error:#}")),
            Ok(reply) if !reply.status.is_success() => {
                Err(format!("status {}", reply.status.as_u16()))
            }
            Ok(reply) => match serde_json::from_slice::<Value>(&reply.body) {
                Ok(value) => Ok((value, reply.version)),
                Err(_) => Err("the answer is not JSON".into()),
            },
        };
        Fetched { service, outcome }
    }

    fn json_or_error(&self) -> Value {
        match &self.outcome {
            Ok((value, _)) => value.clone(),
            Err(reason) => json!({"error": format!("{} unavailable ({reason})", self.service)}),
        }
    }

    fn version(&self) -> Option<&str> {
        self.outcome.as_ref().ok().and_then(|(_, v)| v.as_deref())
    }
}
