#!/usr/bin/env bash
# The Envoy side of the mTLS hop, for the harness's extra target (as the Trellis pair
# is in another run): two Envoys configured as the Trellis pair is: a client side (plaintext in, mutual TLS out with
# the client certificate, the server checked against the mesh root and its SPIFFE URI)
# and a server side (mutual TLS in, client certificate required and checked, plaintext
# to the upstream). Both in this process's session, so the harness counts both.
# Usage: envoy-pair.sh LISTEN_PORT UPSTREAM_PORT [WORKERS]; REAL_ENVOY_BIN, BENCH_MTLS_DIR.
set -euo pipefail
real=${REAL_ENVOY_BIN:?the real envoy binary}
listen=$1 upstream=$2 concurrency=${3:-1}
admin=${ENVOY_ADMIN_PORT:-18291}
pki=${BENCH_MTLS_DIR:?the PKI directory (bench/mtls/pki.sh)}
server_port=${ENVOY_SERVER_PORT:-18201}
dir=$(mktemp -d)
limits='circuit_breakers: {thresholds: [{max_connections: 100000, max_pending_requests: 100000, max_requests: 100000}]}'
hcm() { # stat prefix, cluster
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: $2}}]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
}
cat > "$dir/client.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $admin}}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: $listen}}
    filter_chains:
    - filters:
$(hcm client server_side)
  clusters:
  - name: server_side
    type: STATIC
    connect_timeout: 1s
    $limits
    load_assignment:
      cluster_name: server_side
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $server_port}}}}]}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificates: [{certificate_chain: {filename: $pki/client.pem}, private_key: {filename: $pki/client.key}}]
          validation_context:
            trusted_ca: {filename: $pki/root.pem}
            match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/bench/sa/backend"}}]
YAML
cat > "$dir/server.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $((admin + 100))}}}
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: $server_port}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{certificate_chain: {filename: $pki/backend.pem}, private_key: {filename: $pki/backend.key}}]
            validation_context:
              trusted_ca: {filename: $pki/root.pem}
              match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://cluster.local/"}}]
      filters:
$(hcm server app | sed 's/^/  /')
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    $limits
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $upstream}}}}]}]
YAML
"$real" -c "$dir/server.yaml" --concurrency "$concurrency" --disable-hot-restart --base-id 7 -l warn &
"$real" -c "$dir/client.yaml" --concurrency "$concurrency" --disable-hot-restart --base-id 8 -l warn &
wait
