#!/usr/bin/env bash
# Builds hack/celcheck (the apiserver's own CEL admission code at the pinned Kubernetes version) into a
# cache outside the repository, keyed by that version and by the source's hash. Prints the binary's
# path. Idempotent: exits at once when that binary exists.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
staging_version="v0.${KUBE_VERSION#v1.}"
src_hash="$(cat "$here/celcheck/main.go" "$0" | sha256sum | cut -c1-12)"
cache_root="${WINNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winnode}"
out_dir="$cache_root/celcheck/$KUBE_VERSION-$src_hash"
bin="$out_dir/celcheck"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

log() { printf '[build-celcheck] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not installed; install Go >= 1.26 and run again"; exit 1; }
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
mod="$out_dir/module"
mkdir -p "$mod"
cp "$here/celcheck/main.go" "$mod/main.go"
# The staging modules are published with matching versions: k8s.io/apiserver v0.X.Y is the apiserver
# code of Kubernetes v1.X.Y.
cat > "$mod/go.mod" <<MOD
module winnode.io/hack/celcheck

go 1.25

require (
	k8s.io/api $staging_version
	k8s.io/apimachinery $staging_version
	k8s.io/apiserver $staging_version
	k8s.io/client-go $staging_version
)
MOD
log "building celcheck against k8s.io/apiserver $staging_version (cold: a minute or two)"
(cd "$mod" && go mod tidy >/dev/null 2>&1 || go mod tidy)
(cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
