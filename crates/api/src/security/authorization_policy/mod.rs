//! AuthorizationPolicy: who may do what to the selected workloads. Rules match on
//! the source (`from`), the operation (`to`) and extra conditions (`when`); the
//! action says what a match means (allow, deny, audit, or ask an external
//! authorizer). The types are `spec.rs`; Istio's validation is `validate.rs`, with the
//! `when` keys in `conditions.rs` and single-value rules in `values.rs`.

mod conditions;
mod spec;
mod validate;
mod values;

pub use conditions::{ConditionKeyError, known_condition_keys};
pub use spec::*;
pub use validate::CUSTOM_NOT_SUPPORTED;
pub use values::{PathTemplateError, PortTextError, ServiceAccountError, check_port_text};

#[cfg(test)]
mod tests;
