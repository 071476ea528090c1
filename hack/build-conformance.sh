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
src_hash="$(cat "$here/conformance/main.go" "$0" | sha256sum | cut -c1-12)"
cache_root="${WINNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winnode}"
out_dir="$cache_root/conformance/$KUBE_VERSION-$src_hash"
bin="$out_dir/conformance"
if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

log() { printf '[build-conformance] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not installed; install Go >= 1.26 and run again"; exit 1; }
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
staging_version="v0.${KUBE_VERSION#v1.}"
mod="$out_dir/module"
mkdir -p "$mod"
cp "$here/conformance/main.go" "$mod/main.go"
# k8s.io/kubernetes requires its staging modules at v0.0.0; one replace per staging module, to the
# matching v0.X.Y release, generated from that version's own go.mod (as hack/build-control-plane.sh).
upstream_mod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[[ -f "$upstream_mod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
{
  echo "module winnode.io/hack/conformance"
  echo
  sed -n 's/^go \(.*\)/go \1/p' "$upstream_mod" | head -1
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$upstream_mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > "$mod/go.mod"
log "building conformance against k8s.io/kubernetes $KUBE_VERSION (cold: several minutes)"
(cd "$mod" && go mod tidy >/dev/null 2>&1 || (cd "$mod" && go mod tidy))
(cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
