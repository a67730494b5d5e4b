//! The registry of analyzers, one module per resource family, named as Istio names them,
//! and the helpers they share: raw JSON fields (`json`), resource names (`names`),
//! label selectors (`selectors`), hosts (`hosts`), workloads (`workloads`), the
//! control plane's own resources (`control_plane`) and certificates (`certs`).

use crate::Analyzer;

// --- shared helpers ---
pub mod certs;
pub mod control_plane;
pub mod hosts;
pub mod json;
pub mod names;
pub mod selectors;
pub mod workloads;

// --- h-ana-a ---
pub mod gateway;
pub mod k8sgateway;
pub mod schema;
pub mod virtualservice;

// --- h-ana-b ---
pub mod authn;
pub mod authz;
pub mod destinationrule;
pub mod serviceentry;
pub mod sidecar;

// --- h-ana-c ---
pub mod annotations;
pub mod application_uid;
pub mod conditions;
pub mod deployment;
pub mod deprecation;
pub mod injection;
pub mod service;
pub mod telemetry;

/// Every analyzer Trellis has, in the order they run.
pub static ALL: &[&dyn Analyzer] = &[
    // --- h-ana-a ---
    &gateway::IngressGatewayPortAnalyzer,
    &gateway::ConflictingGatewayAnalyzer,
    &gateway::SecretAnalyzer,
    &gateway::CertificateAnalyzer,
    &k8sgateway::SelectorAnalyzer,
    &schema::ValidationAnalyzer,
    &schema::VirtualServiceValidationAnalyzer,
    &virtualservice::GatewayAnalyzer,
    &virtualservice::DestinationHostAnalyzer,
    &virtualservice::DestinationRuleAnalyzer,
    &virtualservice::ConflictingMeshGatewayHostsAnalyzer,
    &virtualservice::JwtClaimRouteAnalyzer,
    // --- h-ana-b ---
    &authz::AuthorizationPoliciesAnalyzer,
    &authz::CustomActionAnalyzer,
    &authn::BlockedCidrsAnalyzer,
    &destinationrule::CaCertificateAnalyzer,
    &destinationrule::SubsetSelectPodAnalyzer,
    &serviceentry::ProtocolAddressesAnalyzer,
    &serviceentry::ConflictingServiceEntryProtocolAnalyzer,
    &sidecar::SelectorAnalyzer,
    // --- h-ana-c ---
    &service::PortNameAnalyzer,
    &deployment::MultiServiceAnalyzer,
    &application_uid::ApplicationUidAnalyzer,
    &injection::InjectionAnalyzer,
    &telemetry::ProviderAnalyzer,
    &telemetry::SelectorAnalyzer,
    &telemetry::LightstepAnalyzer,
    &telemetry::DefaultSelectorAnalyzer,
    &annotations::K8sAnalyzer,
    &annotations::AlphaAnalyzer,
    &deprecation::DeprecationAnalyzer,
    &conditions::ConditionAnalyzer,
];
