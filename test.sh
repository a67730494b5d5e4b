#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every check CI runs.
# Works alone on a fresh machine of the project's kind (Rust by rustup preinstalled).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "toolchain"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 2
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
cargo --version

step "test fixtures"
# Cluster-mode tests run against a real kube-apiserver, controller-manager and etcd,
# built from their Go modules (about 7 minutes the first time, cached by version in
# ~/.cache/trellis-fixtures), in network namespaces of their own (unshare, ip).
# Pods of the injection and capture tests get network namespaces of their own,
# programmed with iptables (as Istio's init container and kube-proxy do) and reached
# with curl.
for tool in unshare ip openssl iptables-restore setpriv curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing what provides $tool"
    apt-get update -q >/dev/null
    apt-get install -y -q iproute2 util-linux openssl iptables curl >/dev/null
    break
  fi
done
if command -v go >/dev/null 2>&1; then
  TRELLIS_KUBE_FIXTURES=$(bash fixtures/kube/build.sh)
  export TRELLIS_KUBE_FIXTURES
  echo "kube fixtures: $TRELLIS_KUBE_FIXTURES"
else
  echo "go not found: the cluster-mode tests will skip, saying so"
fi

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# The corpus tests read ../shared/corpus when it is beside the checkout and skip otherwise.
cargo test --workspace --locked
