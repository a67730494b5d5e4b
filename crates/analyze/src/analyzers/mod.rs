//! The registry of analyzers, one module per resource family, named as Istio names them.

use crate::Analyzer;

/// Every analyzer Trellis has, in the order they run.
pub static ALL: &[&dyn Analyzer] = &[];
