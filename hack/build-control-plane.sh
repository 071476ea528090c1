#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from Go modules into a cache
# outside the repository, keyed by version. Idempotent: exits at once when the binaries exist.
#
#   hack/build-control-plane.sh            build what is missing, print the bin directory
#   hack/build-control-plane.sh --print    only print the bin directory
#
# The k8s.io/kubernetes module requires its staging modules at v0.0.0; hack/kube-go-mod.sh writes the
# replace list from the pinned version's own go.mod.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=kube-go-mod.sh
source "$here/kube-go-mod.sh"

cache_root="${WINNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winnode}"
bin_dir="$cache_root/control-plane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin"
if [[ "${1:-}" == "--print" ]]; then echo "$bin_dir"; exit 0; fi

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

kube_bins=(kube-apiserver kube-controller-manager kubectl)
all_present=1
for b in etcd "${kube_bins[@]}"; do [[ -x "$bin_dir/$b" ]] || all_present=0; done
if (( all_present )); then log "up to date: $bin_dir"; echo "$bin_dir"; exit 0; fi

command -v go >/dev/null || { log "go is not installed; install Go >= 1.26 and run again"; exit 1; }
mkdir -p "$bin_dir"
work="$cache_root/control-plane/work"
mkdir -p "$work"
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${KUBE_VERSION#v1.}"

build_kube() {
  local mod="$work/kube-$KUBE_VERSION"
  mkdir -p "$mod"
  log "resolving k8s.io/kubernetes $KUBE_VERSION"
  write_kube_go_mod "$mod" winnode.io/hack/kube
  log "go.mod: $(grep -c '=>' "$mod/go.mod") staging modules replaced at $staging_version"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${kube_bins[@]}"; do
    if [[ -x "$bin_dir/$b" ]]; then continue; fi
    log "building $b $KUBE_VERSION (cold: several minutes)"
    (cd "$mod" && go get "k8s.io/kubernetes/cmd/$b@$KUBE_VERSION" >/dev/null 2>&1 || true)
    (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$bin_dir/$b.tmp" "$bin_dir/$b"
  done
}

build_etcd() {
  [[ -x "$bin_dir/etcd" ]] && return 0
  local mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  printf 'module winnode.io/hack/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$mod/go.mod"
  log "building etcd $ETCD_VERSION"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || true)
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
}

start=$(date +%s)
build_etcd
build_kube
log "checking versions"
# Whole output read, not `| head -1`: under pipefail, etcd writing its next line after head exits
# dies of SIGPIPE and fails the build.
out="$("$bin_dir/etcd" --version)"; log "etcd: ${out%%$'\n'*}"
for b in kube-apiserver kube-controller-manager; do
  out="$("$bin_dir/$b" --version)"; log "$b: $out"
  [[ "$out" == *"$KUBE_VERSION"* ]] || { log "$b reports '$out', expected $KUBE_VERSION"; rm -f "$bin_dir/$b"; exit 1; }
done
"$bin_dir/kubectl" version --client >&2
log "done in $(( $(date +%s) - start ))s: $bin_dir"
echo "$bin_dir"
