#!/usr/bin/env bash
# The Trellis side of the mTLS hop, for the harness's extra target: a gateway (the
# client side: plaintext in on LISTEN_PORT) originating the mesh's mutual TLS
# (ISTIO_MUTUAL, the server checked by SPIFFE id) to a sidecar (the server side: STRICT
# PeerAuthentication, inbound to the upstream), both with Istio's metrics on.
# Usage: trellis-pair.sh LISTEN_PORT UPSTREAM_PORT [WORKERS]; PKI in $BENCH_MTLS_DIR.
set -euo pipefail
port=$1 upstream_port=$2 workers=${3:-1}
server_port=${SERVER_PORT:-18209}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${TRELLIS_BIN:-$root/target/release/trellis}
pki=${BENCH_MTLS_DIR:?the PKI directory (bench/mtls/pki.sh)}
client=$(mktemp -d) server=$(mktemp -d)
cat > "$client/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: bench}
spec:
  hosts: [backend.bench.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: $server_port, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {app: backend}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: bench}
spec:
  host: backend.bench.example
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/bench/sa/backend]}
    connectionPool: {tcp: {maxConnections: 1000}, http: {http1MaxPendingRequests: 1000}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route:
    - destination: {host: backend.bench.example, port: {number: $server_port}}
YAML
cat > "$server/mesh.yaml" <<YAML
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bench}
spec:
  mtls: {mode: STRICT}
YAML
"$bin" proxy --standalone "$server" --role sidecar --name backend --namespace bench \
  --service-account backend --labels app=backend --listen 127.0.0.1:18210 \
  --inbound "127.0.0.1:$server_port=127.0.0.1:$upstream_port" --workers "$workers" \
  --admin 127.0.0.1:18211 --stats 127.0.0.1:18212 \
  --identity-cert "$pki/backend.pem" --identity-key "$pki/backend.key" --identity-roots "$pki/root.pem" &
"$bin" proxy --standalone "$client" --role gateway --name client --namespace bench \
  --service-account client --bind 127.0.0.1 --port-map "80=$port" --workers "$workers" \
  --admin 127.0.0.1:18190 --stats 127.0.0.1:18192 \
  --identity-cert "$pki/client.pem" --identity-key "$pki/client.key" --identity-roots "$pki/root.pem" &
wait
