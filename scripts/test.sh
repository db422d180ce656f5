#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what the tests need first.
# README command 2; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_debian_packages

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo build --bin memgate (the end-to-end tests run it as real worker processes)"
cargo build -p memgate --bin memgate

log "cargo test (unit, contract and end-to-end; real redis-server started per test)"
if [ -z "${QDRANT_URL:-}" ]; then
  echo "note: QDRANT_URL is not set, so the Qdrant-over-gRPC backend's contract test is skipped"
fi
cargo test --workspace --all-targets
