#!/usr/bin/env bash
# Builds hack/upstreamtypes: a checker that decodes, strictly, what winnode sends to a Windows host's
# network stack with the upstream Go types, into a cache outside the repository keyed by the upstream
# versions and the source's hash. Prints the binary's path. Idempotent: exits at once when it exists.
#
#   hack/build-upstreamtypes.sh            build when missing, print the binary's path
#   hack/build-upstreamtypes.sh --print    only print the binary's path
#
# Versions:
#   containernetworking/plugins  CNI_PLUGINS_VERSION in operator/winnode/network/cni_plugins.py (installed
#                                on every host), with the containernetworking/cni its go.mod requires;
#   Microsoft/hcsshim            the version that plugins release's go.mod requires: the hcn and HNS v1
#                                types win-bridge and win-overlay were built against;
#   flannel-io/flannel           FLANNEL_VERSION in hack/versions.env.
#
# Most of those types build only for Windows (hcsshim hcn and internal/hns, the plugins' pkg/hns and
# their main packages, flannel's Windows vxlan backend), and internal/ and main packages cannot be
# imported at all. hack/upstreamtypes/extract copies their type and const declarations (plus the few JSON
# methods named in the spec below) out of the module files the Go module proxy serves at those versions
# into Linux-buildable packages under the build directory; each generated file names its upstream path.
# Packages that build on Linux (cni pkg/types, host-local's allocator) are imported as they are.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"
plugins_py="$root/operator/winnode/network/cni_plugins.py"
CNI_PLUGINS_VERSION="$(sed -n 's/^CNI_PLUGINS_VERSION = "\(v[0-9.]*\)"$/\1/p' "$plugins_py")"
[[ -n "$CNI_PLUGINS_VERSION" ]] || { echo "[build-upstreamtypes] no CNI_PLUGINS_VERSION in $plugins_py" >&2; exit 1; }
src_hash="$(cat "$here/upstreamtypes/main.go" "$here/upstreamtypes/extract/main.go" "$0" | sha256sum | cut -c1-12)"
cache_root="${WINNODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/winnode}"
out_dir="$cache_root/upstreamtypes/cni-$CNI_PLUGINS_VERSION-flannel-$FLANNEL_VERSION-$src_hash"
bin="$out_dir/upstreamtypes"
if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

log() { printf '[build-upstreamtypes] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not installed; install Go >= 1.26 and run again"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed to read go mod download's answer"; exit 1; }
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
mod="$out_dir/module"
rm -rf "$mod"
mkdir -p "$mod"

moddir() { # module@version -> its directory in the module cache (downloaded when missing)
	(cd "$mod" && go mod download -json "$1") | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}
modreq() { # directory, module -> the version its go.mod requires
	sed -n "s#^[[:space:]]*\(require \)\{0,1\}$2 \(v[^ ]*\).*#\2#p" "$1/go.mod" | sed -n 1p
}
log "downloading containernetworking/plugins $CNI_PLUGINS_VERSION, flannel $FLANNEL_VERSION"
printf 'module winnode.io/hack/upstreamtypes\n\ngo 1.23\n' >"$mod/go.mod"
plugins="$(moddir "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION")"
HCSSHIM_VERSION="$(modreq "$plugins" github.com/Microsoft/hcsshim)"
CNI_VERSION="$(modreq "$plugins" github.com/containernetworking/cni)"
hcsshim="$(moddir "github.com/Microsoft/hcsshim@$HCSSHIM_VERSION")"
flannel="$(moddir "github.com/flannel-io/flannel@$FLANNEL_VERSION")"
log "hcsshim $HCSSHIM_VERSION and cni $CNI_VERSION (from the plugins' go.mod)"

gen="winnode.io/hack/upstreamtypes/gen"
cat >"$mod/spec.json" <<JSON
[
 {"package": "hcn", "origin": "github.com/!microsoft/hcsshim@$HCSSHIM_VERSION/",
  "sources": ["$hcsshim/hcn/hcn.go", "$hcsshim/hcn/hcnglobals.go", "$hcsshim/hcn/hcnnetwork.go",
              "$hcsshim/hcn/hcnendpoint.go", "$hcsshim/hcn/hcnpolicy.go", "$hcsshim/hcn/hcnroute.go",
              "$hcsshim/hcn/hcnnamespace.go", "$hcsshim/hcn/hcnloadbalancer.go"],
  "skip": ["hcnNetwork", "hcnEndpoint", "hcnNamespace", "hcnLoadBalancer", "hcnRoute"],
  "keep": ["V2ApiSupport", "RemoteSubnetVersion", "HostRouteVersion", "VxlanPortVersion",
           "NetworkResourceTypePolicy", "NetworkResourceTypeDNS", "NetworkResourceTypeExtension",
           "RequestTypeAdd", "RequestTypeRemove", "RequestTypeUpdate", "RequestTypeRefresh"]},
 {"package": "hns", "origin": "github.com/!microsoft/hcsshim@$HCSSHIM_VERSION/",
  "sources": ["$hcsshim/internal/hns/hnsnetwork.go", "$hcsshim/internal/hns/hnspolicy.go",
              "$hcsshim/internal/hns/hnsendpoint.go", "$hcsshim/internal/hns/namespace.go", "$hcsshim/internal/hns/hnspolicylist.go"],
  "skip": ["hnsResponse", "endpointAttachInfo"]},
 {"package": "cnihns", "origin": "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION/",
  "sources": ["$plugins/pkg/hns/netconf_windows.go"],
  "rewrite": {"github.com/Microsoft/hcsshim/hcn": "$gen/hcn"}},
 {"package": "winbridge", "origin": "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION/",
  "sources": ["$plugins/plugins/main/windows/win-bridge/win-bridge_windows.go"],
  "rewrite": {"github.com/containernetworking/plugins/pkg/hns": "$gen/cnihns"}},
 {"package": "winoverlay", "origin": "github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION/",
  "sources": ["$plugins/plugins/main/windows/win-overlay/win-overlay_windows.go"],
  "rewrite": {"github.com/containernetworking/plugins/pkg/hns": "$gen/cnihns"}},
 {"package": "flannelip", "origin": "github.com/flannel-io/flannel@$FLANNEL_VERSION/",
  "sources": ["$flannel/pkg/ip/ipnet.go", "$flannel/pkg/ip/ip6net.go"],
  "keep": ["FromBytes", "FromIP", "ParseIP4", "IP4.String", "IP4.Octets", "IP4.ToIP", "IP4.MarshalJSON", "IP4.UnmarshalJSON",
           "FromIP6", "FromIP16Bytes", "ParseIP6", "IP6.ToIP", "IP6.String", "IP6.MarshalJSON", "IP6.UnmarshalJSON"]},
 {"package": "flannellease", "origin": "github.com/flannel-io/flannel@$FLANNEL_VERSION/",
  "sources": ["$flannel/pkg/lease/lease.go"],
  "skip": ["Lease", "Event", "Watcher", "LeaseWatchResult", "LeaseWatcher"],
  "rewrite": {"github.com/flannel-io/flannel/pkg/ip": "$gen/flannelip"}},
 {"package": "flannelvxlan", "origin": "github.com/flannel-io/flannel@$FLANNEL_VERSION/",
  "sources": ["$flannel/pkg/backend/vxlan/vxlan_network.go", "$flannel/pkg/backend/vxlan/vxlan.go"],
  "skip": ["network", "linkSubscribeFunc", "VXLANBackend"],
  "keep": ["hardwareAddr.MarshalJSON", "hardwareAddr.UnmarshalJSON"],
  "export": {"LeaseAttrs": "vxlanLeaseAttrs"}},
 {"package": "flannelvxlanwin", "origin": "github.com/flannel-io/flannel@$FLANNEL_VERSION/",
  "sources": ["$flannel/pkg/backend/vxlan/vxlan_network_windows.go", "$flannel/pkg/backend/vxlan/vxlan_windows.go"],
  "skip": ["network", "VXLANBackend"],
  "keep": ["hardwareAddr.MarshalJSON", "hardwareAddr.UnmarshalJSON"],
  "export": {"LeaseAttrs": "vxlanLeaseAttrs"}}
]
JSON
mkdir -p "$mod/extract" "$mod/gen"
cp "$here/upstreamtypes/extract/main.go" "$mod/extract/main.go"
(cd "$mod" && go run ./extract spec.json gen)
cp "$here/upstreamtypes/main.go" "$mod/main.go"
cat >>"$mod/go.mod" <<MOD

require (
	github.com/containernetworking/cni $CNI_VERSION
	github.com/containernetworking/plugins $CNI_PLUGINS_VERSION
)
MOD
log "building upstreamtypes (cold: about a minute)"
(cd "$mod" && go mod tidy >/dev/null 2>&1 || (cd "$mod" && go mod tidy))
(cd "$mod" && go vet ./gen/... && go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
mv "$bin.tmp" "$bin"
echo "$bin"
