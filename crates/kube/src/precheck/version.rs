//! The API server's version as `/version` gives it, and whether it is new enough:
//! Trellis's sidecars are native sidecars (init containers with `restartPolicy:
//! Always`), on by default from Kubernetes 1.29. Providers write the minor version
//! their own way (`"34+"`); `gitVersion` (`v1.34.3-eks-…`) is the fallback.

use k8s_openapi::apimachinery::pkg::version::Info;
use serde::Serialize;

use super::{Check, Status};

/// The oldest Kubernetes (major, minor) Trellis installs on.
pub const MINIMUM: (u32, u32) = (1, 29);

/// What the API server says it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    /// As the server says it (`v1.34.3`).
    pub git_version: String,
    /// `None` when neither the fields nor `gitVersion` read as a version.
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl ServerVersion {
    /// Reads `/version`'s answer.
    pub fn from_info(info: &Info) -> ServerVersion {
        let from_fields = leading_number(&info.major).zip(leading_number(&info.minor));
        let (major, minor) = match from_fields.or_else(|| from_git_version(&info.git_version)) {
            Some((major, minor)) => (Some(major), Some(minor)),
            None => (None, None),
        };
        ServerVersion {
            git_version: info.git_version.clone(),
            major,
            minor,
        }
    }

    /// Whether it is at least [`MINIMUM`]; `None` when the version is unreadable.
    pub fn supported(&self) -> Option<bool> {
        Some((self.major?, self.minor?) >= MINIMUM)
    }

    pub(super) fn check(&self, server: &str) -> Check {
        let (major, minor) = MINIMUM;
        let shown = if self.git_version.is_empty() {
            "an unnamed version"
        } else {
            &self.git_version
        };
        let (status, message) = match self.supported() {
            Some(true) => (
                Status::Pass,
                format!(
                    "Kubernetes API server {server} reachable, version {shown} \
                     ({major}.{minor} or later needed for native sidecars)"
                ),
            ),
            Some(false) => (
                Status::Fail,
                format!(
                    "Kubernetes API server {server} runs {shown}: Trellis needs {major}.{minor} \
                     or later (its sidecars are native sidecars)"
                ),
            ),
            None => (
                Status::Warn,
                format!(
                    "Kubernetes API server {server} reachable, but its version ({shown}) does \
                     not read as MAJOR.MINOR: make sure it is {major}.{minor} or later"
                ),
            ),
        };
        Check {
            name: "kubernetes-version",
            status,
            message,
            details: Vec::new(),
        }
    }
}

/// The digits a field starts with (`"34+"` → 34).
fn leading_number(text: &str) -> Option<u32> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// `v1.34.3-eks-abc` → (1, 34).
fn from_git_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.strip_prefix('v').unwrap_or(text).split('.');
    let major = leading_number(parts.next()?)?;
    let minor = leading_number(parts.next()?)?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str, git_version: &str) -> Info {
        Info {
            major: major.to_string(),
            minor: minor.to_string(),
            git_version: git_version.to_string(),
            ..Info::default()
        }
    }

    #[test]
    fn provider_minor_with_a_plus_reads_as_its_number() {
        let v = ServerVersion::from_info(&info("1", "34+", "v1.34.3-gke.100"));
        assert_eq!((v.major, v.minor), (Some(1), Some(34)));
        assert_eq!(v.supported(), Some(true));
    }

    #[test]
    fn git_version_is_the_fallback_when_the_fields_are_empty() {
        let v = ServerVersion::from_info(&info("", "", "v1.30.1-eks-1234"));
        assert_eq!((v.major, v.minor), (Some(1), Some(30)));
    }

    #[test]
    fn version_1_28_fails_and_1_29_passes() {
        let old = ServerVersion::from_info(&info("1", "28", "v1.28.9"));
        assert_eq!(old.check("https://k").status, Status::Fail);
        assert!(old.check("https://k").message.contains("v1.28.9"));
        let new = ServerVersion::from_info(&info("1", "29", "v1.29.0"));
        assert_eq!(new.check("https://k").status, Status::Pass);
    }

    #[test]
    fn an_unreadable_version_is_a_warning() {
        let v = ServerVersion::from_info(&info("", "", "v0.0.0-master+$Format"));
        assert_eq!(v.supported(), Some(false));
        let v = ServerVersion::from_info(&info("", "", "unknown"));
        assert_eq!(v.supported(), None);
        assert_eq!(v.check("https://k").status, Status::Warn);
    }
}
