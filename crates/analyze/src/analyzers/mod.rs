//! The registry of analyzers, one module per resource family, named as Istio names them.

use crate::Analyzer;

// --- h-ana-a ---
pub mod gateway;
pub mod k8sgateway;
pub mod schema;
pub mod util_a;
pub mod virtualservice;

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
];
