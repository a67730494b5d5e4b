//! What the input says about Istio's own installation: its ConfigMaps in the control
//! plane namespace (the mesh config, the sidecar injector's values), and which
//! resources the installation or its gateway controller owns.

use serde_json::Value;
use trellis_api::Resource;

use super::selectors::Labels;
use crate::Context;

/// The ConfigMaps called `name` in the control plane namespace (or with no namespace
/// written), in input order.
pub fn istio_config_maps<'a>(
    cx: &'a Context<'_>,
    name: &'a str,
) -> impl Iterator<Item = &'a Resource> + 'a {
    let istio_ns = cx.options().istio_namespace.as_str();
    cx.of("", "ConfigMap").filter(move |c| {
        c.meta.name == name && c.meta.namespace.as_deref().is_none_or(|n| n == istio_ns)
    })
}

/// The mesh config: the one given in the options, else Istio's `istio` ConfigMap
/// (key `mesh`) in the control plane namespace, as `istioctl analyze` reads it.
pub fn mesh_config(cx: &Context<'_>) -> Option<Value> {
    if let Some(given) = &cx.options().mesh_config {
        return Some(given.clone());
    }
    let cm = istio_config_maps(cx, "istio").next()?;
    let text = cm.raw["data"]["mesh"].as_str()?;
    let doc = trellis_api::yaml::parse(text).ok()?.into_iter().next()?;
    Some(doc.root.to_json())
}

/// True when the mesh config turns on DNS capture with address auto-allocation
/// (`ISTIO_META_DNS_CAPTURE` and `ISTIO_META_DNS_AUTO_ALLOCATE` in proxy metadata), so
/// ServiceEntries get addresses without writing them.
pub fn auto_allocates_addresses(cx: &Context<'_>) -> bool {
    let Some(mesh) = mesh_config(cx) else {
        return false;
    };
    let meta = &mesh["defaultConfig"]["proxyMetadata"];
    let on = |key: &str| {
        meta[key]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    on("ISTIO_META_DNS_CAPTURE") && on("ISTIO_META_DNS_AUTO_ALLOCATE")
}

/// Resources Istio's installation owns (labelled `istio: ...` or `release: istio`).
pub fn is_control_plane(labels: &Labels) -> bool {
    labels.contains_key("istio") || labels.get("release").is_some_and(|v| v == "istio")
}

/// Resources the Istio gateway controller generated (gateways, waypoints, east-west).
pub fn is_generated_by_gateway_controller(labels: &Labels) -> bool {
    matches!(
        labels.get("gateway.istio.io/managed").map(String::as_str),
        Some(
            "istio.io-gateway-controller"
                | "istio.io-mesh-controller"
                | "istio.io-eastwest-controller"
        )
    )
}
