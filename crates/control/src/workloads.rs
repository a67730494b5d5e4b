//! Workloads no proxy announces: in local mode, the pods that run without a sidecar
//! (Istio's injection rules left them out). The runner lists them in a JSON file it
//! hands the control plane; they are endpoints reached in plaintext at their app's
//! address. Sidecars announce themselves in their Hello instead.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use trellis_compile::Workload;

/// One workload as the file lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedWorkload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub address: IpAddr,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub service_account: String,
}

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not a JSON list of workloads: {source}")]
    Parse {
        file: String,
        source: serde_json::Error,
    },
}

/// Reads the workloads listed in `file` (none of them has a sidecar).
pub fn read(file: &Path) -> Result<Vec<Workload>, WorkloadsError> {
    let name = || file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| WorkloadsError::Read {
        file: name(),
        source,
    })?;
    let listed: Vec<ListedWorkload> =
        serde_json::from_str(&text).map_err(|source| WorkloadsError::Parse {
            file: name(),
            source,
        })?;
    Ok(listed
        .into_iter()
        .map(|w| Workload {
            name: w.name,
            namespace: w.namespace,
            labels: w.labels,
            address: Some(w.address),
            ports: w.ports,
            service_account: w.service_account,
            sidecar: false,
        })
        .collect())
}

/// Writes `workloads` to `file` for [`read`].
pub fn write(file: &Path, workloads: &[ListedWorkload]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(workloads).map_err(std::io::Error::other)?;
    std::fs::write(file, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_workloads_read_back_without_sidecars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("workloads.json");
        let listed = vec![ListedWorkload {
            name: "legacy".into(),
            namespace: "default".into(),
            labels: BTreeMap::from([("app".into(), "legacy".into())]),
            address: "127.0.2.9".parse().expect("ip"),
            ports: BTreeMap::new(),
            service_account: "legacy".into(),
        }];
        write(&file, &listed).expect("write");
        let read = read(&file).expect("read");
        assert_eq!(read.len(), 1);
        assert!(!read[0].sidecar);
        assert_eq!(read[0].address, Some(listed[0].address));
        std::fs::write(&file, "{").expect("write");
        assert!(matches!(
            super::read(&file),
            Err(WorkloadsError::Parse { .. })
        ));
    }
}
