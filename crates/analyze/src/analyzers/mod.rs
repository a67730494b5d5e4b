//! The registry of analyzers, one module per resource family, named as Istio names them.

use crate::Analyzer;

// --- h-ana-b ---
pub mod authn;
pub mod authz;
pub mod destinationrule;
pub mod serviceentry;
pub mod sidecar;
pub mod util_b;

/// Every analyzer Trellis has, in the order they run.
pub static ALL: &[&dyn Analyzer] = &[
    // --- h-ana-b ---
    &authz::AuthorizationPoliciesAnalyzer,
    &authn::BlockedCidrsAnalyzer,
    &destinationrule::CaCertificateAnalyzer,
    &destinationrule::SubsetSelectPodAnalyzer,
    &serviceentry::ProtocolAddressesAnalyzer,
    &serviceentry::ConflictingServiceEntryProtocolAnalyzer,
    &sidecar::SelectorAnalyzer,
];
