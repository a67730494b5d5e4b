#!/usr/bin/env bash
# The Envoy side of the mTLS hop, standing in for the harness's Envoy binary
# (ENVOY_BIN): `--version` goes to the real Envoy; otherwise it reads the listener,
# admin and upstream ports from the config the harness rendered and runs two Envoys
# configured as the Trellis pair is: a client side (plaintext in, mutual TLS out with
# the client certificate, the server checked against the mesh root and its SPIFFE URI)
# and a server side (mutual TLS in, client certificate required and checked, plaintext
# to the upstream). Both in this process's session, so the harness counts both.
set -euo pipefail
real=${REAL_ENVOY_BIN:?the real envoy binary}
if [ "${1:-}" = "--version" ]; then exec "$real" --version; fi
cfg= concurrency=1
while [ $# -gt 0 ]; do
  case $1 in
    -c) cfg=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    *) shift ;;
  esac
done
pki=${BENCH_MTLS_DIR:?the PKI directory (bench/mtls/pki.sh)}
ports=$(grep -o 'port_value: [0-9]*' "$cfg" | awk '{print $2}')
admin=$(echo "$ports" | sed -n 1p) listen=$(echo "$ports" | sed -n 2p) upstream=$(echo "$ports" | tail -1)
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
