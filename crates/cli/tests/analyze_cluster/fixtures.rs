//! What `analyze_cluster.rs` applies: the seed's examples it takes, the workloads
//! around them (with a few mistakes), the ingress gateway, and which of Istio's
//! analyzer test inputs a cluster accepts as they are.

/// The seed's examples this test applies (02 and 03 are both VirtualService
/// `reviews`: a cluster keeps one, so only the canary is taken).
pub const SEED_FILES: &[&str] = &[
    "01-gateway.yaml",
    "02-virtualservice-canary.yaml",
    "04-virtualservice-fault.yaml",
    "05-destinationrule.yaml",
    "06-peerauthentication.yaml",
    "07-authorizationpolicy.yaml",
    "08-canary-step2.yaml",
];

/// The ingress gateway an Istio install runs (namespace istio-system). Files alone are
/// analyzed with a stand-in for it; a cluster has it or not, so both sides get it.
pub const INGRESS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway, app: istio-ingressgateway}}
    spec:
      containers: [{name: istio-proxy, image: trellis, args: [proxy, --role, gateway]}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 80, protocol: TCP}
  - {name: https, port: 443, targetPort: 443, protocol: TCP}";

/// The workloads around the seed's examples, and a few mistakes: a VirtualService
/// routing to a subset no DestinationRule defines, a Gateway whose selector matches no
/// pod, a certificate Secret holding no certificate, a TCP ServiceEntry without
/// addresses, and a broken route in staging.
pub const WORKLOADS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: production, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: staging, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Secret
metadata: {name: app-tls, namespace: istio-system}
type: Opaque
data: {tls.crt: bm90IGEgY2VydGlmaWNhdGU=, tls.key: bm90IGEga2V5}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: production}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: production}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: reviews, image: reviews:v1, ports: [{containerPort: 9080}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: production}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec: {containers: [{name: reviews, image: reviews:v2, ports: [{containerPort: 9080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: production}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1, namespace: production}
spec:
  selector: {matchLabels: {app: ratings}}
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec: {containers: [{name: ratings, image: ratings:v1, ports: [{containerPort: 9080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: production}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1, namespace: production}
spec:
  selector: {matchLabels: {app: details}}
  template:
    metadata: {labels: {app: details, version: v1}}
    spec: {containers: [{name: details, image: details:v1, ports: [{containerPort: 9080}]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: production}
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: details, subset: v3}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: production}
spec:
  selector: {app: internal-gateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*.internal.example.com']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments-db, namespace: production}
spec:
  hosts: [db.payments.example.com]
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: staging}
spec:
  hosts: [orders]
  http:
  - route:
    - destination: {host: orders}
";

/// Istio's analyzer test inputs that a cluster accepts as they are (no Pod without
/// containers, no Service with unnamed ports or protocol HTTP) and that share no
/// resource name.
pub const ISTIO_CASES: &[&str] = &[
    "virtualservice_destinationrules.yaml",
    "destinationrule-subsets-not-select-pods.yaml",
    "virtualservice_gateways.yaml",
    "conflicting-gateways.yaml",
    "deployment-con-sec-uid.yaml",
    "authorizationpolicies.yaml",
];

/// Istio's mesh config with DNS address allocation on: ServiceEntries need no addresses.
pub const MESH_CONFIG: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      proxyMetadata:
        ISTIO_META_DNS_CAPTURE: 'true'
        ISTIO_META_DNS_AUTO_ALLOCATE: 'true'
";
