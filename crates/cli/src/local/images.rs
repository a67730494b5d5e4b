//! The container images local mode can run without a `command`: Istio's sample
//! images, each by a program bundled in `trellis` that does the same job (the
//! bookinfo services, httpbin) or by an idle process (the curl and sleep clients,
//! whose containers only wait to be exec'd into). Anything else needs a `command`.
//!
//! Images are recognised by repository name, from any registry and at any tag, so
//! `docker.io/istio/...` and `registry.istio.io/release/...` alike.

/// A program standing in for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    /// The program and its arguments; `trellis` means this binary.
    pub command: Vec<String>,
    /// Variables the stand-in needs (the manifest's own env comes after, and wins).
    pub env: Vec<(String, String)>,
    /// What runs, said to the user: "`trellis bookinfo reviews` (black stars)".
    pub says: String,
}

/// The stand-in for `image`; `Ok(None)` when local mode has none, an error when it
/// knows the image and knows it cannot run it.
pub fn stand_in(image: &str) -> Result<Option<StandIn>, String> {
    let repository = repository(image);
    let name = repository.rsplit('/').next().unwrap_or(repository);
    if let Some(service) = name.strip_prefix("examples-bookinfo-") {
        return bookinfo(image, service);
    }
    let idle = || StandIn {
        command: vec!["sleep".into(), "infinity".into()],
        env: Vec::new(),
        says: "an idle `sleep infinity` (the sample client only waits to be exec'd into)".into(),
    };
    Ok(match repository {
        "mccutchen/go-httpbin" | "kennethreitz/httpbin" | "kong/httpbin" | "istio/httpbin" => {
            Some(StandIn {
                command: vec!["trellis".into(), "httpbin".into()],
                env: Vec::new(),
                says: "`trellis httpbin` (httpbin's /get, /headers, /status, /delay, /anything)"
                    .into(),
            })
        }
        "curlimages/curl" | "governmentpaas/curl-ssl" | "istio/curl" | "nicolaka/netshoot" => {
            Some(idle())
        }
        _ if name == "sleep" => Some(idle()),
        _ => None,
    })
}

/// The repository of an image reference, without registry host, tag or digest:
/// `registry.istio.io/release/examples-bookinfo-details-v1:1.20.3` →
/// `release/examples-bookinfo-details-v1`; `docker.io/curlimages/curl:8.16.0` →
/// `curlimages/curl`.
fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag follows the last `:` after the last `/` (a registry may have a port).
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let without_tag = match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    // A first component with a dot or a port, or `localhost`, is a registry host.
    match without_tag.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => without_tag,
    }
}

/// Istio's bookinfo images: `examples-bookinfo-SERVICE-vN[-VARIANT]`.
fn bookinfo(image: &str, service: &str) -> Result<Option<StandIn>, String> {
    let mut parts = service.splitn(3, '-');
    let (name, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or("v1"));
    let variant = parts.next();
    let version_env = ("SERVICE_VERSION".to_string(), version.to_string());
    let run = |args: &[&str], env: Vec<(String, String)>, says: String| {
        let mut command = vec!["trellis".to_string(), "bookinfo".to_string()];
        command.extend(args.iter().map(|a| a.to_string()));
        Ok(Some(StandIn { command, env, says }))
    };
    match name {
        "productpage" | "details" => run(
            &[name],
            vec![version_env],
            format!("`trellis bookinfo {name}` ({version})"),
        ),
        "reviews" => {
            let stars = match version {
                "v1" => "none",
                "v2" => "black",
                _ => "red",
            };
            run(
                &["reviews"],
                vec![version_env, ("STARS".into(), stars.into())],
                format!("`trellis bookinfo reviews` ({version}, stars: {stars})"),
            )
        }
        "ratings" => {
            let note = if version == "v1" && variant.is_none() {
                String::new()
            } else {
                "; its ratings are built in, no database is read".into()
            };
            run(
                &["ratings"],
                vec![version_env],
                format!("`trellis bookinfo ratings` ({version}{note})"),
            )
        }
        "mongodb" | "mysqldb" => Err(format!(
            "image {image} is bookinfo's database; local mode has no database to run: \
             leave it out (the bundled ratings keep their ratings in memory)"
        )),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_lose_registry_tag_and_digest() {
        assert_eq!(
            repository("registry.istio.io/release/examples-bookinfo-details-v1:1.20.3"),
            "release/examples-bookinfo-details-v1"
        );
        assert_eq!(
            repository("docker.io/curlimages/curl:8.16.0"),
            "curlimages/curl"
        );
        assert_eq!(
            repository("localhost:5000/mccutchen/go-httpbin@sha256:ab"),
            "mccutchen/go-httpbin"
        );
        assert_eq!(repository("nginx"), "nginx");
    }

    #[test]
    fn every_bookinfo_image_has_its_service_and_version() {
        for registry in ["docker.io/istio", "registry.istio.io/release"] {
            let reviews = stand_in(&format!("{registry}/examples-bookinfo-reviews-v2:1.20.3"))
                .expect("known")
                .expect("a stand-in");
            assert_eq!(reviews.command, ["trellis", "bookinfo", "reviews"]);
            assert!(reviews.env.contains(&("STARS".into(), "black".into())));
            assert!(
                reviews
                    .env
                    .contains(&("SERVICE_VERSION".into(), "v2".into()))
            );
        }
        let red = stand_in("istio/examples-bookinfo-reviews-v3:1.18.0")
            .expect("known")
            .expect("a stand-in");
        assert!(red.env.contains(&("STARS".into(), "red".into())));
        let ratings = stand_in("istio/examples-bookinfo-ratings-v2-mysql:1.20.3")
            .expect("known")
            .expect("a stand-in");
        assert_eq!(ratings.command, ["trellis", "bookinfo", "ratings"]);
        assert!(ratings.says.contains("no database"));
        assert!(stand_in("istio/examples-bookinfo-mongodb:1.20.3").is_err());
    }

    #[test]
    fn sample_clients_idle_and_httpbin_is_bundled() {
        let curl = stand_in("docker.io/curlimages/curl:8.16.0")
            .expect("known")
            .expect("a stand-in");
        assert_eq!(curl.command, ["sleep", "infinity"]);
        let httpbin = stand_in("docker.io/mccutchen/go-httpbin:v2.15.0")
            .expect("known")
            .expect("a stand-in");
        assert_eq!(httpbin.command, ["trellis", "httpbin"]);
        assert_eq!(stand_in("nginx:1.27").expect("no error"), None);
    }
}
