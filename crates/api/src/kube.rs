//! STUB: the Kubernetes subset the mesh reads.

use serde::{Deserialize, Serialize};

macro_rules! stub {
    ($($name:ident),*) => {$(
        /// Kubernetes object (stub).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            #[serde(flatten)]
            pub fields: serde_json::Map<String, serde_json::Value>,
        }
    )*};
}
stub!(Namespace, Service, Deployment, Pod, ServiceAccount, Secret);
