//! What `trellis install --set KEY=VALUE` takes, with istioctl's profile names:
//! `default` (two control-plane replicas and the ingress gateway), `demo` (one
//! replica, ingress and egress gateways, small requests: a laptop cluster), `minimal`
//! (the control plane only) and `empty` (the namespace and the CRDs only).

use std::fmt;

/// istioctl's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Default,
    Demo,
    Minimal,
    Empty,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Default,
        Profile::Demo,
        Profile::Minimal,
        Profile::Empty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Demo => "demo",
            Profile::Minimal => "minimal",
            Profile::Empty => "empty",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings manifests are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub profile: Profile,
    /// Image registry and repository prefix (`{hub}/trellis:{tag}`).
    pub hub: String,
    pub tag: String,
    /// The control plane's namespace.
    pub namespace: String,
    /// MeshConfig `trustDomain`.
    pub trust_domain: String,
}

impl Default for Values {
    fn default() -> Values {
        Values {
            profile: Profile::Default,
            hub: "ghcr.io/trellis-mesh".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
            namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
        }
    }
}

/// A `--set` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("--set {0}: expected KEY=VALUE")]
    Syntax(String),
    #[error(
        "--set {key}: unknown setting (known: profile, hub, tag, namespace, meshConfig.trustDomain)"
    )]
    UnknownKey { key: String },
    #[error("--set profile={0}: unknown profile (known: default, demo, minimal, empty)")]
    UnknownProfile(String),
    #[error("--set {key}={value}: {why}")]
    Invalid {
        key: String,
        value: String,
        why: &'static str,
    },
}

impl Values {
    /// Applies `--set` arguments in order (a later one wins).
    pub fn with_sets<'a>(
        mut self,
        sets: impl IntoIterator<Item = &'a str>,
    ) -> Result<Values, SetError> {
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| SetError::Syntax(set.to_string()))?;
            let invalid = |why| SetError::Invalid {
                key: key.into(),
                value: value.into(),
                why,
            };
            match key {
                "profile" => {
                    self.profile = Profile::ALL
                        .into_iter()
                        .find(|p| p.name() == value)
                        .ok_or_else(|| SetError::UnknownProfile(value.into()))?;
                }
                "hub" if !value.is_empty() && !value.contains(char::is_whitespace) => {
                    self.hub = value.trim_end_matches('/').into();
                }
                "hub" => return Err(invalid("an image registry such as ghcr.io/me")),
                "tag" if is_tag(value) => self.tag = value.into(),
                "tag" => return Err(invalid("an image tag: letters, digits, `_`, `.`, `-`")),
                "namespace" | "values.global.istioNamespace" if is_dns_label(value) => {
                    self.namespace = value.into();
                }
                "namespace" | "values.global.istioNamespace" => {
                    return Err(invalid("a namespace name (DNS-1123 label)"));
                }
                "meshConfig.trustDomain" if !value.is_empty() => self.trust_domain = value.into(),
                "meshConfig.trustDomain" => return Err(invalid("a trust domain")),
                _ => return Err(SetError::UnknownKey { key: key.into() }),
            }
        }
        Ok(self)
    }

    /// The image every Trellis container runs.
    pub fn image(&self) -> String {
        format!("{}/trellis:{}", self.hub, self.tag)
    }
}

fn is_tag(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_apply_in_order_and_bad_ones_say_what_is_known() {
        let v = Values::default()
            .with_sets(["profile=demo", "hub=registry.example/me/", "tag=1.2.3"])
            .expect("valid");
        assert_eq!(v.profile, Profile::Demo);
        assert_eq!(v.image(), "registry.example/me/trellis:1.2.3");
        let e = Values::default()
            .with_sets(["profile=huge"])
            .expect_err("unknown");
        assert!(e.to_string().contains("known: default, demo"), "{e}");
        let e = Values::default()
            .with_sets(["replicas=3"])
            .expect_err("unknown");
        assert!(e.to_string().contains("known: profile, hub"), "{e}");
        assert!(Values::default().with_sets(["tag=a b"]).is_err());
        assert!(Values::default().with_sets(["profile"]).is_err());
    }
}
