//! ServiceAccount: its name is a workload's identity (the SPIFFE ID's last part);
//! the few other fields are typed so they load, and are rarely used.

use serde::{Deserialize, Serialize};

use super::null_default;

/// A ServiceAccount (its name is the workload identity; the rest is rarely used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<ObjectName>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub image_pull_secrets: Vec<ObjectName>,
}

/// A reference to an object by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectName {
    #[serde(default)]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use crate::kube::test_support::load_one;
    use crate::resource::Spec;

    #[test]
    fn namespace_and_service_account_load() {
        load_one(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio-injection: enabled\nspec:\n  finalizers: [kubernetes]\nstatus:\n  phase: Active\n",
        );
        let Spec::ServiceAccount(sa) = load_one(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\nautomountServiceAccountToken: false\nimagePullSecrets:\n- name: reg\n",
        ) else {
            panic!("not a ServiceAccount")
        };
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert_eq!(sa.image_pull_secrets[0].name, "reg");
    }
}
