//! A connected proxy as the control plane compiles for it: the `Hello` it sent, read
//! into what `trellis_compile` needs (identity, outbound and inbound listeners, the
//! gateway's port map), and back again for the client that sends it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use trellis_compile::{Inbound, Mesh, ProxyIdentity, Workload};
use trellis_model::{ProxyConfig, Role};

use crate::proto;

/// Why a `Hello` cannot be read (the stream is refused with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("hello.id is empty")]
    NoId,
    #[error("hello.{field}: `{text}` is not an IP address")]
    NotAnIp { field: &'static str, text: String },
    #[error("hello.{field}: `{text}` is not an address")]
    NotAnAddress { field: &'static str, text: String },
    #[error("hello.{field}: {value} is not a port")]
    NotAPort { field: String, value: u32 },
}

/// What one proxy is and where it listens.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub id: String,
    pub role: Role,
    pub identity: ProxyIdentity,
    /// Where the mesh reaches the workload; `None` keeps it out of the registry.
    pub pod_ip: Option<IpAddr>,
    pub outbound: SocketAddr,
    pub inbound: Vec<Inbound>,
    pub port_map: BTreeMap<u16, u16>,
    /// Named container ports of the workload.
    pub named_ports: BTreeMap<String, u16>,
    /// Its admin endpoint, when it has one the control plane may read (`/certs`).
    pub admin: Option<SocketAddr>,
    /// A sidecar in capture mode (see [`trellis_compile::capture`]).
    pub capture: bool,
    /// In capture mode, IPv6 is captured too.
    pub capture_ipv6: bool,
}

impl ProxySpec {
    /// Reads a `Hello`; a malformed address is an error naming the field.
    pub fn from_hello(h: &proto::Hello) -> Result<ProxySpec, HelloError> {
        if h.id.is_empty() {
            return Err(HelloError::NoId);
        }
        let ip = |field: &'static str, text: &str| -> Result<Option<IpAddr>, HelloError> {
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| HelloError::NotAnIp {
                field,
                text: text.into(),
            })
        };
        let addr = |field: &'static str, text: &str| -> Result<SocketAddr, HelloError> {
            text.parse().map_err(|_| HelloError::NotAnAddress {
                field,
                text: text.into(),
            })
        };
        let port = |field: &str, value: u32| {
            u16::try_from(value).map_err(|_| HelloError::NotAPort {
                field: field.into(),
                value,
            })
        };
        let pod_ip = ip("pod_ip", &h.pod_ip)?;
        let bind_ip = ip("bind_ip", &h.bind_ip)?.or(pod_ip);
        let role = match proto::Role::try_from(h.role) {
            Ok(proto::Role::Gateway) => Role::Gateway,
            _ => Role::Sidecar,
        };
        let outbound = if h.outbound.is_empty() {
            SocketAddr::new(bind_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), 15001)
        } else {
            addr("outbound", &h.outbound)?
        };
        let mut inbound = Vec::new();
        for i in &h.inbound {
            inbound.push(Inbound {
                listen: addr("inbound.listen", &i.listen)?,
                app: addr("inbound.app", &i.app)?,
                port: port("inbound.port", i.port)?,
            });
        }
        let mut port_map = BTreeMap::new();
        for (from, to) in &h.port_map {
            port_map.insert(port("port_map", *from)?, port("port_map", *to)?);
        }
        let mut named_ports = BTreeMap::new();
        for (name, p) in &h.ports {
            let p = u16::try_from(*p).map_err(|_| HelloError::NotAPort {
                field: format!("ports.{name}"),
                value: *p,
            })?;
            named_ports.insert(name.clone(), p);
        }
        let admin = if h.admin.is_empty() {
            None
        } else {
            Some(addr("admin", &h.admin)?)
        };
        Ok(ProxySpec {
            id: h.id.clone(),
            named_ports,
            admin,
            capture: h.capture && role == Role::Sidecar,
            capture_ipv6: h.capture_ipv6,
            role,
            identity: ProxyIdentity {
                name: if h.workload.is_empty() {
                    h.id.clone()
                } else {
                    h.workload.clone()
                },
                namespace: if h.namespace.is_empty() {
                    "default".into()
                } else {
                    h.namespace.clone()
                },
                labels: h
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                service_account: h.service_account.clone(),
                bind_ip,
            },
            pod_ip,
            outbound,
            inbound,
            port_map,
        })
    }

    /// The `Hello` that describes this proxy (what a client sends).
    pub fn to_hello(&self, version: u64) -> proto::Hello {
        proto::Hello {
            id: self.id.clone(),
            role: match self.role {
                Role::Gateway => proto::Role::Gateway as i32,
                Role::Sidecar => proto::Role::Sidecar as i32,
            },
            workload: self.identity.name.clone(),
            namespace: self.identity.namespace.clone(),
            labels: self.identity.labels.clone().into_iter().collect(),
            service_account: self.identity.service_account.clone(),
            pod_ip: self.pod_ip.map(|i| i.to_string()).unwrap_or_default(),
            bind_ip: self
                .identity
                .bind_ip
                .map(|i| i.to_string())
                .unwrap_or_default(),
            outbound: self.outbound.to_string(),
            inbound: self
                .inbound
                .iter()
                .map(|i| proto::InboundPort {
                    listen: i.listen.to_string(),
                    app: i.app.to_string(),
                    port: u32::from(i.port),
                })
                .collect(),
            port_map: self
                .port_map
                .iter()
                .map(|(a, b)| (u32::from(*a), u32::from(*b)))
                .collect(),
            version,
            ports: self
                .named_ports
                .iter()
                .map(|(k, v)| (k.clone(), u32::from(*v)))
                .collect(),
            admin: self.admin.map(|a| a.to_string()).unwrap_or_default(),
            capture: self.capture,
            capture_ipv6: self.capture_ipv6,
        }
    }

    /// The workload this proxy announces, when it gave a pod IP.
    pub fn workload(&self) -> Option<Workload> {
        let address = self.pod_ip?;
        (self.role == Role::Sidecar).then(|| Workload {
            name: self.identity.name.clone(),
            namespace: self.identity.namespace.clone(),
            labels: self.identity.labels.clone(),
            address: Some(address),
            ports: self.named_ports.clone(),
            service_account: self.identity.service_account.clone(),
            // It announced itself through its sidecar.
            sidecar: true,
        })
    }

    /// This proxy's own resources: for a sidecar, its node, listeners, inbound side
    /// and security (the outbound side is shared with its group); for a gateway,
    /// everything.
    pub fn own_units(&self, mesh: &Mesh, jwks: &crate::jwks::Cache) -> crate::resources::Units {
        match self.role {
            Role::Gateway => {
                let mut config = self.compile(mesh);
                jwks.fill(&mut config.security);
                crate::resources::units_of(&config)
            }
            Role::Sidecar => {
                let inbound = self.inbound_ports(mesh);
                let mut config =
                    trellis_compile::sidecar_local(&self.identity, self.outbound, &inbound, 0);
                config.node.id = self.id.clone();
                config.security = self.security(mesh, jwks);
                if self.capture {
                    self.log_notes(trellis_compile::capture(
                        mesh,
                        &self.identity,
                        &mut config,
                        &self.capture_options(),
                    ));
                }
                crate::resources::units_of(&config)
            }
        }
    }

    /// The security policies of this sidecar's workload: per proxy, since they depend
    /// on its labels (selectors) and inbound ports, not only on its group.
    pub fn security(&self, mesh: &Mesh, jwks: &crate::jwks::Cache) -> trellis_model::Security {
        let inbound = self.inbound_ports(mesh);
        let (mut security, notes) =
            trellis_compile::sidecar_security(mesh, &self.identity, &inbound);
        self.log_notes(notes);
        jwks.fill(&mut security);
        security
    }

    /// Its inbound ports: as announced, or in capture mode when it announced none,
    /// the target ports of the services selecting it.
    pub fn inbound_ports(&self, mesh: &Mesh) -> std::borrow::Cow<'_, [Inbound]> {
        if self.capture && self.inbound.is_empty() {
            std::borrow::Cow::Owned(trellis_compile::inbound_ports(
                mesh,
                &self.identity,
                &self.named_ports,
            ))
        } else {
            std::borrow::Cow::Borrowed(&self.inbound)
        }
    }

    fn capture_options(&self) -> trellis_compile::CaptureOptions {
        trellis_compile::CaptureOptions {
            ipv6: self.capture_ipv6,
            ..Default::default()
        }
    }

    fn log_notes(&self, notes: Vec<trellis_compile::Note>) {
        for n in notes {
            tracing::debug!(proxy = %self.id, resource = %n.resource, "{}", n.message);
        }
    }

    /// Compiles this proxy's config from `mesh` (version 0: the caller stamps it).
    pub fn compile(&self, mesh: &Mesh) -> ProxyConfig {
        let (mut config, notes) = match self.role {
            Role::Gateway => trellis_compile::gateway(mesh, &self.identity, &self.port_map, 0),
            Role::Sidecar => {
                let inbound = self.inbound_ports(mesh);
                let (mut config, mut notes) =
                    trellis_compile::sidecar(mesh, &self.identity, self.outbound, &inbound, 0);
                if self.capture {
                    notes.extend(trellis_compile::capture(
                        mesh,
                        &self.identity,
                        &mut config,
                        &self.capture_options(),
                    ));
                }
                (config, notes)
            }
        };
        self.log_notes(notes);
        config.node.id = self.id.clone();
        config
    }
}
