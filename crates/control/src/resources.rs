//! A proxy's configuration as named resources — the node, listeners, route tables
//! (their virtual hosts' order), virtual hosts, clusters and the workload's security —
//! each encoded once as JSON with a hash, so pushes can carry only what changed and
//! proxies that share resources share their encodings.
//!
//! The control plane turns configs into [`Units`] and diffs them; the proxy's side keeps
//! an [`Assembled`] view that applies pushes and yields a whole `ProxyConfig`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use trellis_model::{Cluster, Listener, Node, ProxyConfig, RouteTable, Security, VirtualHost};

use crate::proto::{self, Kind};

/// `(kind, name)`.
pub type Key = (i32, String);

/// One encoded resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub hash: u64,
    pub json: Bytes,
}

/// A set of encoded resources by key.
pub type Units = HashMap<Key, Unit>;

/// Encodings by hash, so equal resources compiled for different groups of proxies
/// (most clusters and virtual hosts are the same in every namespace) share one copy.
static INTERNED: std::sync::LazyLock<std::sync::Mutex<HashMap<u64, Bytes>>> =
    std::sync::LazyLock::new(Default::default);

/// Encodes one resource (sharing the bytes with an equal resource encoded before).
pub fn unit<T: serde::Serialize>(value: &T) -> Unit {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    json.hash(&mut h);
    let hash = h.finish();
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    let json = match interned.get(&hash) {
        Some(b) if b[..] == json[..] => b.clone(),
        _ => {
            let b = Bytes::from(json);
            interned.insert(hash, b.clone());
            b
        }
    };
    Unit { hash, json }
}

/// Forgets encodings nothing uses any more.
pub fn prune_interned() {
    INTERNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, b| !b.is_unique());
}

/// The resource name of a table's virtual host: by its name, so adding or removing
/// one does not rename the others.
pub fn vhost_name(table: &str, vhost: &str) -> String {
    format!("{table}\t{vhost}")
}

/// Adds route tables: one ROUTE_TABLE (the order) and one VIRTUAL_HOST each.
pub fn add_tables(units: &mut Units, tables: &[RouteTable]) {
    for t in tables {
        let unique = t
            .virtual_hosts
            .iter()
            .map(|v| &v.name)
            .collect::<std::collections::HashSet<_>>()
            .len()
            == t.virtual_hosts.len();
        let names: Vec<String> = t
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if unique {
                    vhost_name(&t.name, &v.name)
                } else {
                    format!("{}\t#{i}", t.name)
                }
            })
            .collect();
        for (name, vh) in names.iter().zip(&t.virtual_hosts) {
            units.insert((Kind::VirtualHost as i32, name.clone()), unit(vh));
        }
        units.insert((Kind::RouteTable as i32, t.name.clone()), unit(&names));
    }
}

/// Adds clusters.
pub fn add_clusters(units: &mut Units, clusters: &[Cluster]) {
    for c in clusters {
        units.insert((Kind::Cluster as i32, c.name.clone()), cluster_unit(c));
    }
}

/// Encodes a cluster, its client key (if any) kept out (see [`crate::keys`]).
pub fn cluster_unit(c: &Cluster) -> Unit {
    if crate::keys::has_key(c) {
        unit(&crate::keys::seal_cluster(c))
    } else {
        unit(c)
    }
}

/// Every resource of a whole config.
pub fn units_of(config: &ProxyConfig) -> Units {
    let mut units = Units::new();
    units.insert((Kind::Node as i32, "node".into()), unit(&config.node));
    for l in &config.listeners {
        // Certificate keys are kept out of the push (see `crate::keys`).
        units.insert(
            (Kind::Listener as i32, l.name.clone()),
            unit(&crate::keys::seal_listener(l)),
        );
    }
    add_tables(&mut units, &config.route_tables);
    add_clusters(&mut units, &config.clusters);
    add_security(&mut units, &config.security);
    units
}

/// The name of the one security resource.
pub const SECURITY: &str = "security";

/// Adds the security resource, unless it is empty (an absent one means empty).
pub fn add_security(units: &mut Units, security: &Security) {
    if security.is_empty() {
        units.remove(&(Kind::Security as i32, SECURITY.into()));
    } else {
        units.insert((Kind::Security as i32, SECURITY.into()), unit(security));
    }
}

/// What changed from `old` to `new`: resources to send and names to drop.
pub fn diff(old: Option<&Units>, new: &Units) -> (Vec<proto::Resource>, Vec<proto::ResourceName>) {
    let mut changed = Vec::new();
    for (key, u) in new {
        if old
            .and_then(|o| o.get(key))
            .is_none_or(|o| o.hash != u.hash)
        {
            changed.push(resource(key, u));
        }
    }
    let removed = old
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| !new.contains_key(*k))
        .map(|(kind, name)| proto::ResourceName {
            kind: *kind,
            name: name.clone(),
        })
        .collect();
    (changed, removed)
}

/// A unit as a message (the JSON bytes are shared, not copied).
pub fn resource(key: &Key, u: &Unit) -> proto::Resource {
    proto::Resource {
        kind: key.0,
        name: key.1.clone(),
        json: u.json.clone(),
    }
}

/// Why a push cannot be put together into a config (the proxy NACKs it, with this
/// text).
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("resource {kind} `{name}`: {source}")]
    Decode {
        kind: i32,
        name: String,
        source: serde_json::Error,
    },
    #[error("resource `{name}` has unknown kind {kind}")]
    UnknownKind { kind: i32, name: String },
    #[error("route table `{table}` names virtual host `{host}`, which was not sent")]
    MissingVirtualHost { table: String, host: String },
}

/// A proxy's configuration being built up from pushes.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    node: Node,
    listeners: BTreeMap<String, Listener>,
    tables: BTreeMap<String, Vec<String>>,
    vhosts: HashMap<String, VirtualHost>,
    clusters: BTreeMap<String, Cluster>,
    security: Security,
}

impl Assembled {
    /// Applies one push (a full one starts from nothing). Errors name the resource.
    pub fn apply(&mut self, push: &proto::Push) -> Result<(), AssembleError> {
        if !push.incremental {
            *self = Assembled::default();
        }
        for r in &push.removed {
            match Kind::try_from(r.kind) {
                Ok(Kind::Listener) => {
                    self.listeners.remove(&r.name);
                }
                Ok(Kind::RouteTable) => {
                    self.tables.remove(&r.name);
                }
                Ok(Kind::VirtualHost) => {
                    self.vhosts.remove(&r.name);
                }
                Ok(Kind::Cluster) => {
                    self.clusters.remove(&r.name);
                }
                Ok(Kind::Security) => self.security = Security::default(),
                Ok(Kind::Node) | Err(_) => {}
            }
        }
        for r in &push.resources {
            let bad = |source| AssembleError::Decode {
                kind: r.kind,
                name: r.name.clone(),
                source,
            };
            match Kind::try_from(r.kind) {
                Ok(Kind::Node) => self.node = serde_json::from_slice(&r.json).map_err(bad)?,
                Ok(Kind::Listener) => {
                    self.listeners.insert(
                        r.name.clone(),
                        serde_json::from_slice(&r.json).map_err(bad)?,
                    );
                }
                Ok(Kind::RouteTable) => {
                    self.tables.insert(
                        r.name.clone(),
                        serde_json::from_slice(&r.json).map_err(bad)?,
                    );
                }
                Ok(Kind::VirtualHost) => {
                    self.vhosts.insert(
                        r.name.clone(),
                        serde_json::from_slice(&r.json).map_err(bad)?,
                    );
                }
                Ok(Kind::Cluster) => {
                    self.clusters.insert(
                        r.name.clone(),
                        serde_json::from_slice(&r.json).map_err(bad)?,
                    );
                }
                Ok(Kind::Security) => {
                    self.security = serde_json::from_slice(&r.json).map_err(bad)?;
                }
                Err(_) => {
                    return Err(AssembleError::UnknownKind {
                        kind: r.kind,
                        name: r.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The whole config; a route table naming a virtual host that was never sent is
    /// an error.
    pub fn config(&self, version: u64) -> Result<ProxyConfig, AssembleError> {
        let mut route_tables = Vec::with_capacity(self.tables.len());
        for (name, hosts) in &self.tables {
            let mut virtual_hosts = Vec::with_capacity(hosts.len());
            for h in hosts {
                let vh = self
                    .vhosts
                    .get(h)
                    .ok_or_else(|| AssembleError::MissingVirtualHost {
                        table: name.clone(),
                        host: h.clone(),
                    })?;
                virtual_hosts.push(vh.clone());
            }
            route_tables.push(RouteTable {
                name: name.clone(),
                virtual_hosts,
            });
        }
        Ok(ProxyConfig {
            version,
            node: self.node.clone(),
            listeners: self.listeners.values().cloned().collect(),
            route_tables,
            clusters: self.clusters.values().cloned().collect(),
            security: self.security.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(weight_v2: u32, endpoints: usize) -> ProxyConfig {
        let cluster = |name: &str, n: usize| Cluster {
            name: name.into(),
            endpoints: (0..n)
                .map(|i| trellis_model::Endpoint {
                    address: Some(format!("10.0.0.{}:80", i + 1).parse().expect("addr")),
                    weight: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ProxyConfig {
            version: 0,
            node: Node::default(),
            listeners: vec![Listener {
                name: "outbound".into(),
                route_table: Some("outbound".into()),
                ..Default::default()
            }],
            route_tables: vec![RouteTable {
                name: "outbound".into(),
                virtual_hosts: ["a", "b", "c"]
                    .iter()
                    .map(|h| VirtualHost {
                        name: (*h).into(),
                        domains: vec![(*h).into()],
                        routes: vec![trellis_model::Route {
                            name: format!("{h}-{}", if *h == "b" { weight_v2 } else { 0 }),
                            ..Default::default()
                        }],
                    })
                    .collect(),
            }],
            clusters: vec![cluster("a", 2), cluster("b", endpoints), cluster("c", 2)],
            ..Default::default()
        }
    }

    #[test]
    fn a_change_sends_only_what_changed_and_reassembles_the_same_config() {
        let before = units_of(&config(10, 2));
        let after = units_of(&config(10, 3));
        let (changed, removed) = diff(Some(&before), &after);
        // An endpoint move: one cluster, nothing else.
        assert_eq!(
            changed
                .iter()
                .map(|r| (r.kind, r.name.as_str()))
                .collect::<Vec<_>>(),
            vec![(Kind::Cluster as i32, "b")]
        );
        assert!(removed.is_empty());
        let (route_change, _) = diff(Some(&before), &units_of(&config(50, 2)));
        assert_eq!(route_change.len(), 1);
        assert_eq!(route_change[0].kind, Kind::VirtualHost as i32);

        let mut proxy = Assembled::default();
        let (all, _) = diff(None, &before);
        proxy
            .apply(&proto::Push {
                version: 1,
                incremental: false,
                base_version: 0,
                resources: all,
                removed: vec![],
                more: false,
            })
            .expect("full push");
        assert_eq!(proxy.config(1).expect("config"), {
            let mut c = config(10, 2);
            c.version = 1;
            c
        });
        proxy
            .apply(&proto::Push {
                version: 2,
                incremental: true,
                base_version: 1,
                resources: changed,
                removed,
                more: false,
            })
            .expect("delta");
        assert_eq!(proxy.config(2).expect("config"), {
            let mut c = config(10, 3);
            c.version = 2;
            c
        });
    }

    #[test]
    fn removals_and_missing_virtual_hosts_are_handled() {
        let full = config(10, 2);
        let mut smaller = full.clone();
        smaller.clusters.pop();
        smaller.route_tables[0].virtual_hosts.pop();
        let (changed, removed) = diff(Some(&units_of(&full)), &units_of(&smaller));
        let mut names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["c", "outbound\tc"]);
        assert_eq!(changed.len(), 1, "the table's order changed");

        let mut proxy = Assembled::default();
        let table_only = proto::Push {
            version: 1,
            incremental: false,
            base_version: 0,
            resources: vec![resource(
                &(Kind::RouteTable as i32, "outbound".into()),
                &unit(&vec!["outbound\ta"]),
            )],
            removed: vec![],
            more: false,
        };
        proxy.apply(&table_only).expect("apply");
        let err = proxy.config(1).expect_err("missing virtual host");
        assert!(err.to_string().contains("outbound\ta"), "{err}");
    }

    #[test]
    fn security_travels_as_one_resource_and_its_removal_empties_it() {
        let plain = config(10, 2);
        let mut secured = plain.clone();
        secured.security.mtls.mode = trellis_model::security::MtlsMode::Strict;
        secured
            .security
            .authorization
            .push(trellis_model::security::AuthzPolicy {
                name: "shop/deny-all".into(),
                action: trellis_model::security::AuthzAction::Allow,
                provider: None,
                dry_run: false,
                rules: vec![],
            });
        assert!(!units_of(&plain).contains_key(&(Kind::Security as i32, SECURITY.into())));
        let (changed, removed) = diff(Some(&units_of(&plain)), &units_of(&secured));
        assert_eq!(
            changed
                .iter()
                .map(|r| (r.kind, r.name.as_str()))
                .collect::<Vec<_>>(),
            [(Kind::Security as i32, SECURITY)]
        );
        let mut proxy = Assembled::default();
        let push = |version, resources, removed| proto::Push {
            version,
            incremental: version > 1,
            base_version: version - 1,
            resources,
            removed,
            more: false,
        };
        proxy
            .apply(&push(1, diff(None, &units_of(&secured)).0, removed))
            .expect("full");
        assert_eq!(proxy.config(1).expect("config").security, secured.security);
        let (changed, removed) = diff(Some(&units_of(&secured)), &units_of(&plain));
        assert_eq!(removed.len(), 1);
        proxy.apply(&push(2, changed, removed)).expect("delta");
        assert!(proxy.config(2).expect("config").security.is_empty());
    }
}
