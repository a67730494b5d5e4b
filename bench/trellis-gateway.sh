#!/usr/bin/env bash
# Runs `trellis proxy` as a standalone gateway in front of one upstream, with real mesh
# configuration (Gateway + VirtualService + ServiceEntry + DestinationRule) and Istio's
# standard metrics on. Used as the harness's extra proxy by bench/proxy-vs-envoy.sh.
# Usage: bench/trellis-gateway.sh LISTEN_PORT UPSTREAM_PORT [WORKERS]
# TRELLIS_BIN picks the binary (default: this checkout's target/release/trellis).
set -euo pipefail
port=$1 upstream_port=$2 workers=${3:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
cat > "$dir/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: bench}
spec:
  hosts: [upstream.bench.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: $upstream_port, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {app: upstream, version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upstream, namespace: bench}
spec:
  host: upstream.bench.example
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1000}, http: {http1MaxPendingRequests: 1000}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $port, name: http, protocol: HTTP}
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
    - destination: {host: upstream.bench.example, port: {number: $upstream_port}}
YAML
exec "${TRELLIS_BIN:-$root/target/release/trellis}" proxy --standalone "$dir" --role gateway --bind 127.0.0.1 \
  --workers "$workers" --admin 127.0.0.1:18190 --stats 127.0.0.1:18192
