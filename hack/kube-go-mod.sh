# Sourced by the build scripts that compile code from k8s.io/kubernetes at $KUBE_VERSION.
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 (they live in its own tree); a module that
# imports it needs one replace per staging module, pointing at the matching v0.X.Y release. The list is
# generated from that version's own go.mod, so it can never drift from the pinned version.

# write_kube_go_mod DIR MODULE: write DIR/go.mod for module MODULE requiring k8s.io/kubernetes.
write_kube_go_mod() {
  local dir="$1" module="$2" staging_version="v0.${KUBE_VERSION#v1.}" upstream_mod
  upstream_mod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$upstream_mod" ]] || { log "could not download k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  {
    echo "module $module"
    echo
    sed -n 's/^go \(.*\)/go \1/p' "$upstream_mod" | sed -n 1p
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$upstream_mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$dir/go.mod"
}
