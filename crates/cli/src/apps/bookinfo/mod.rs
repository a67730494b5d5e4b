//! `trellis bookinfo SERVICE`: a small bookstore in four services, our own take on
//! Istio's bookinfo sample. productpage calls details and reviews; reviews calls
//! ratings when it shows stars (`STARS=black` or `red`, versions v2 and v3).
//!
//! Each service answers JSON (productpage also HTML), stamps `x-trellis-service`
//! and `x-trellis-version`, propagates tracing and routing headers, and degrades
//! gracefully when an upstream is down, as the original does.

mod pages;
mod productpage;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::body::Body;
use super::identity::Identity;
use super::server::{self, ListenArgs};
use super::upstream::Upstreams;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every service listens on 0.0.0.0:9080 unless told otherwise and calls the others at
http://SERVICE:9080, through the proxy in HTTP_PROXY when set, else at the address in
<SERVICE>_ADDR (DETAILS_ADDR, REVIEWS_ADDR, RATINGS_ADDR), else by DNS.

Examples:
  trellis bookinfo ratings --listen 127.0.0.1:9083
  STARS=black SERVICE_VERSION=v2 RATINGS_ADDR=127.0.0.1:9083 trellis bookinfo reviews --listen 127.0.0.1:9082
  trellis bookinfo details --listen 127.0.0.1:9081
  DETAILS_ADDR=127.0.0.1:9081 REVIEWS_ADDR=127.0.0.1:9082 trellis bookinfo productpage --listen 127.0.0.1:9080
  curl -s localhost:9080/productpage              the page; /api/v1/products/0 for JSON"
)]
pub struct Args {
    #[command(subcommand)]
    pub service: Service,
}

/// The four bookinfo services.
#[derive(Debug, clap::Subcommand)]
pub enum Service {
    /// Serve the front page (/productpage, /api/v1/products/0), calling details and reviews.
    Productpage(Common),
    /// Serve book details (/details/0).
    Details(Common),
    /// Serve book reviews (/reviews/0); with STARS=black or red, each with a rating from ratings.
    Reviews(ReviewsArgs),
    /// Serve book ratings (/ratings/0).
    Ratings(Common),
}

/// Options every bookinfo service takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Version reported in `x-trellis-version`.
    #[arg(long, value_name = "V", env = "SERVICE_VERSION", default_value = "v1")]
    pub version: String,
    /// Pod name reported by reviews [default: the host name].
    #[arg(long, value_name = "POD", env = "POD_NAME")]
    pub pod: Option<String>,
}

/// Options of the reviews service.
#[derive(Debug, clap::Args)]
pub struct ReviewsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Star colour: `none` (v1, no call to ratings), `black` (v2) or `red` (v3).
    #[arg(long, value_enum, env = "STARS", default_value = "none")]
    pub stars: Stars,
}

/// How reviews shows ratings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stars {
    None,
    Black,
    Red,
}

/// Which service this process is, with what it needs at request time.
#[derive(Debug)]
enum Role {
    Productpage,
    Details,
    Reviews(Stars),
    Ratings,
}

#[derive(Debug)]
struct App {
    role: Role,
    identity: Identity,
    upstreams: Upstreams,
}

/// Runs one bookinfo service until Ctrl-C or SIGTERM.
pub fn run(args: &Args) -> i32 {
    let (name, role, common, upstreams): (&'static str, _, _, &[&'static str]) = match &args.service
    {
        Service::Productpage(c) => ("productpage", Role::Productpage, c, &["details", "reviews"]),
        Service::Details(c) => ("details", Role::Details, c, &[]),
        Service::Reviews(r) => ("reviews", Role::Reviews(r.stars), &r.common, &["ratings"]),
        Service::Ratings(c) => ("ratings", Role::Ratings, c, &[]),
    };
    server::run(async move {
        let addr = common
            .listen
            .resolve(SocketAddr::from(([0, 0, 0, 0], 9080)))?;
        let app = Arc::new(App {
            role,
            identity: Identity::new(name.into(), common.version.clone(), common.pod.clone())?,
            upstreams: Upstreams::from_env(name, upstreams)?,
        });
        server::serve(name, addr, move |request| {
            let app = Arc::clone(&app);
            async move { app.handle(request).await }
        })
        .await
    })
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let id = &self.identity;
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return id.error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
        }
        let path = request.uri().path();
        if path == "/health" {
            return id.json(StatusCode::OK, to_json(&json!({"status": "healthy"})));
        }
        match &self.role {
            Role::Productpage => productpage::handle(self, &request).await,
            Role::Details => match product_id(path, "/details/") {
                Some(product) => id.json(StatusCode::OK, to_json(&details(product))),
                None => not_found(id),
            },
            Role::Ratings => match product_id(path, "/ratings/") {
                Some(product) => id.json(StatusCode::OK, to_json(&ratings(product))),
                None => not_found(id),
            },
            Role::Reviews(stars) => match product_id(path, "/reviews/") {
                Some(product) => {
                    let body = self.reviews(product, *stars, request.headers()).await;
                    id.json(StatusCode::OK, to_json(&body))
                }
                None => not_found(id),
            },
        }
    }

    /// The reviews of `product`, each with its rating when `stars` asks for them.
    async fn reviews(&self, product: u64, stars: Stars, inbound: &HeaderMap) -> serde_json::Value {
        let color = match stars {
            Stars::None => None,
            Stars::Black => Some("black"),
            Stars::Red => Some("red"),
        };
        let ratings = match color {
            None => None,
            Some(_) => Some(
                self.upstreams
                    .get("ratings", &format!("/ratings/{product}"), inbound)
                    .await
                    .ok()
                    .filter(|reply| reply.status.is_success())
                    .and_then(|reply| {
                        serde_json::from_slice::<serde_json::Value>(&reply.body).ok()
                    }),
            ),
        };
        let reviews: Vec<serde_json::Value> = pages::REVIEWS
            .iter()
            .map(|(reviewer, text)| {
                let mut review = json!({"reviewer": reviewer, "text": text});
                if let (Some(color), Some(ratings)) = (color, &ratings) {
                    review["rating"] = match ratings
                        .as_ref()
                        .and_then(|r| r["ratings"][reviewer].as_u64())
                    {
                        Some(stars) => json!({"stars": stars, "color": color}),
                        None => json!({"error": "Ratings service is currently unavailable"}),
                    };
                }
                review
            })
            .collect();
        json!({
            "id": product.to_string(),
            "podname": self.identity.pod,
            "clustername": "null",
            "reviews": reviews,
        })
    }
}

/// The number after `prefix` in `path` (`/details/0` → 0).
fn product_id(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

fn details(product: u64) -> serde_json::Value {
    json!({
        "id": product,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}

fn ratings(product: u64) -> serde_json::Value {
    json!({"id": product, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
}

fn not_found(identity: &Identity) -> Response<Body> {
    identity.error(StatusCode::NOT_FOUND, "no such page")
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("a JSON value always serializes");
    bytes.push(b'\n');
    bytes
}
