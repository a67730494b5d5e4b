//! One admission decision: an `AdmissionReview` (v1) in, its answer out. The object is
//! judged exactly as `trellis validate` judges a file (the loader, then each
//! resource's rules: the errors are those `trellis_control::source::validated`
//! refuses a file for, the warnings are passed on), and a refusal reads like
//! validate's output with the resource in place of FILE:LINE. Pure: no I/O.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use trellis_api::{Diagnostic, Severity};

/// The answer to one review body (the API server's request, as sent).
pub fn review(body: &[u8]) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.try_into()
                    .map_err(|_| "no request in the review".to_string())
            }) {
            Ok(r) => r,
            Err(e) => {
                return AdmissionResponse::invalid(format!("cannot read the AdmissionReview: {e}"))
                    .into_review();
            }
        };
    decide(&request).into_review()
}

/// Allows or denies `request`.
pub fn decide(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    // Deleting is always possible, and so is writing a status (analysis messages).
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return allowed;
    }
    let Some(object) = &request.object else {
        return allowed;
    };
    let verdict = judge(object, request);
    let allowed = if verdict.warnings.is_empty() {
        allowed
    } else {
        let mut allowed = allowed;
        allowed.warnings = Some(verdict.warnings);
        allowed
    };
    if verdict.errors.is_empty() {
        allowed
    } else {
        let mut denied = allowed.deny(verdict.errors.join("; "));
        denied.result.code = 400;
        denied.result.reason = "Invalid".into();
        denied
    }
}

/// What validation said, as lines for the API server's client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Validates one object as `trellis validate` would a file holding it.
pub fn judge(object: &DynamicObject, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    let mut value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return Verdict {
                errors: vec![format!("the object cannot be read: {e}")],
                warnings: Vec::new(),
            };
        }
    };
    if let Some(map) = value.as_object_mut() {
        // The status is the control plane's to write (analysis messages), not config.
        map.remove("status");
        let types = object.types.as_ref();
        if types.is_none() {
            let group = &request.kind.group;
            let version = &request.kind.version;
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            map.insert("apiVersion".into(), api_version.into());
            map.insert("kind".into(), request.kind.kind.clone().into());
        }
    }
    let fallback = resource_name(request);
    let source = format!("admission:{fallback}");
    let loaded = trellis_api::load_str(&source, &value.to_string());
    let mut diagnostics: Vec<Diagnostic> = loaded.diagnostics;
    for resource in &loaded.resources {
        diagnostics.extend(resource.validate());
    }
    let mut verdict = Verdict::default();
    for d in &diagnostics {
        let line = describe(d, &fallback);
        match d.severity {
            Severity::Error => verdict.errors.push(line),
            Severity::Warning => verdict.warnings.push(line),
        }
    }
    verdict
}

/// `Kind namespace/name: path: message`: validate's line without FILE:LINE.
pub fn describe(d: &Diagnostic, fallback: &str) -> String {
    let mut out = d.resource.clone().unwrap_or_else(|| fallback.to_string());
    out.push_str(": ");
    if let Some(path) = d.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(&d.message);
    out
}

/// `Kind namespace/name` from the request, for problems found before the object
/// had a name (a document that does not load at all).
fn resource_name(request: &AdmissionRequest<DynamicObject>) -> String {
    let kind = &request.kind.kind;
    match request.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => format!("{kind} {ns}/{}", request.name),
        None => format!("{kind} {}", request.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(operation: &str, object: Value, sub_resource: Option<&str>) -> Vec<u8> {
        let mut request = json!({
            "uid": "7f0c6b1e-0000-4000-8000-000000000001",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "name": "reviews",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        });
        if let Some(s) = sub_resource {
            request["subResource"] = s.into();
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .expect("JSON")
    }

    fn virtual_service(http: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default", "uid": "u",
                "managedFields": [{"manager": "kubectl"}], "generation": 1},
            "spec": {"hosts": ["reviews"], "http": http},
        })
    }

    fn answer(body: &[u8]) -> AdmissionResponse {
        let review = review(body);
        assert_eq!(review.types.api_version, "admission.k8s.io/v1");
        assert_eq!(review.types.kind, "AdmissionReview");
        review.response.expect("a response")
    }

    #[test]
    fn a_misspelt_field_is_denied_with_validates_line() {
        let vs = virtual_service(
            json!([{"route": [{"destination": {"host": "reviews"}, "wieght": 100}]}]),
        );
        let r = answer(&body("CREATE", vs, None));
        assert!(!r.allowed);
        assert_eq!(r.uid, "7f0c6b1e-0000-4000-8000-000000000001");
        assert_eq!(
            r.result.message,
            "VirtualService default/reviews: spec.http[0].route[0].wieght: unknown field `wieght` (did you mean `weight`?)"
        );
        assert_eq!(r.result.code, 400);
    }

    #[test]
    fn a_bad_regex_is_denied_naming_the_field() {
        let vs = virtual_service(
            json!([{"match": [{"uri": {"regex": "("}}], "route": [{"destination": {"host": "reviews"}}]}]),
        );
        let r = answer(&body("UPDATE", vs, None));
        assert!(!r.allowed);
        assert!(
            r.result
                .message
                .starts_with("VirtualService default/reviews: spec.http[0].match[0].uri.regex: "),
            "{}",
            r.result.message
        );
    }

    #[test]
    fn a_valid_resource_is_allowed_without_warnings() {
        let vs = virtual_service(json!([{"route": [{"destination": {"host": "reviews"}}]}]));
        let r = answer(&body("CREATE", vs, None));
        assert!(r.allowed, "{}", r.result.message);
        assert_eq!(r.warnings, None);
    }

    #[test]
    fn deletes_and_status_writes_are_always_allowed() {
        let bad = virtual_service(json!([{"route": [{"wieght": 1}]}]));
        assert!(answer(&body("DELETE", Value::Null, None)).allowed);
        assert!(answer(&body("UPDATE", bad, Some("status"))).allowed);
    }

    #[test]
    fn a_custom_authorization_policy_is_allowed_with_a_warning() {
        let mut raw = body(
            "CREATE",
            json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "ext", "namespace": "default"},
                "spec": {"action": "CUSTOM", "provider": {"name": "opa"},
                    "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
            }),
            None,
        );
        let mut v: Value = serde_json::from_slice(&raw).expect("JSON");
        v["request"]["kind"] =
            json!({"group": "security.istio.io", "version": "v1", "kind": "AuthorizationPolicy"});
        raw = serde_json::to_vec(&v).expect("JSON");
        let r = answer(&raw);
        assert!(r.allowed, "{}", r.result.message);
        let warnings = r.warnings.expect("a warning");
        assert!(
            warnings[0].starts_with("AuthorizationPolicy default/ext: spec"),
            "{warnings:?}"
        );
    }

    #[test]
    fn istio_kinds_trellis_ignores_are_allowed() {
        let filter = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": "f", "namespace": "default"},
            "spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "anything": true}]},
        });
        let r = answer(&body("CREATE", filter, None));
        assert!(r.allowed, "{}", r.result.message);
    }

    #[test]
    fn an_unreadable_review_is_refused_as_invalid() {
        let r = answer(b"{not json");
        assert!(!r.allowed);
        assert!(
            r.result
                .message
                .starts_with("cannot read the AdmissionReview")
        );
    }
}
