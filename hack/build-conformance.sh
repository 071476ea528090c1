#!/usr/bin/env bash
# Builds hack/conformance (the kubelet's, kube-proxy's and kube-log-runner's own flag and config rules at
# the pinned Kubernetes version) into a cache outside the repository, keyed by that version and by the
# source's hash. Prints the binary's path. Idempotent: exits at once when that binary exists.
#
#   hack/build-conformance.sh            build when missing, print the binary's path
#   hack/build-conformance.sh --print    only print the binary's path
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=kube-go-mod.sh
source "$here/kube-go-mod.sh"
src_hash="$(cat "$here/conformance/main.go" "$0" "$here/kube-go-mod.sh" | sha256sum | cut -c1-12)"
cache_root="${WINNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winnode}"
out_dir="$cache_root/conformance/$KUBE_VERSION-$src_hash"
bin="$out_dir/conformance"
if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

log() { printf '[build-conformance] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not installed; install Go >= 1.26 and run again"; exit 1; }
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
mod="$out_dir/module"
mkdir -p "$mod"
cp "$here/conformance/main.go" "$mod/main.go"
write_kube_go_mod "$mod" winnode.io/hack/conformance
log "building conformance against k8s.io/kubernetes $KUBE_VERSION (cold: several minutes)"
(cd "$mod" && go mod tidy >/dev/null 2>&1 || (cd "$mod" && go mod tidy))
(cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
