#!/usr/bin/env bash
# Build the local Kubernetes control plane used by the tests: etcd, kube-apiserver,
# kube-controller-manager and helm, from the published Go modules pinned in this
# directory (no Docker, no downloaded release tarballs).
#
# Binaries go to $KUBETASKS_CACHE/bin/<k8s-version>/ (default ~/.cache/kubetasks), outside
# the work tree, so `make clean` keeps them and a second run does nothing. Go's own caches
# (GOCACHE, GOMODCACHE) stay at their defaults and are shared with every other Go build.
#
# The machine this runs on may have two cores shared with other work: the commands are
# built one after the other with `-p 2` rather than all at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KUBETASKS_CACHE:-$HOME/.cache/kubetasks}"

# One source of truth for the versions: the go.mod files next to this script.
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")"
helm_version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$here/helm/go.mod")"
bin="$cache/bin/$k8s_version"

binaries=(etcd kube-apiserver kube-controller-manager helm)
missing=()
for name in "${binaries[@]}"; do
    [[ -x "$bin/$name" ]] || missing+=("$name")
done

start=$SECONDS
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "controlplane: all binaries present in $bin (warm, $((SECONDS - start))s)"
    exit 0
fi

if ! command -v go >/dev/null; then
    echo "controlplane: 'go' is not on PATH; install Go >= 1.24 to build ${missing[*]}" >&2
    exit 1
fi

mkdir -p "$bin"
export CGO_ENABLED=0  # static binaries, and no C toolchain needed

# Kubernetes reports the version stamped at link time; without it /version says
# v0.0.0-master and tools that check the server version (helm's kubeVersion) misbehave.
major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

# build NAME MODULE_DIR PACKAGE LDFLAGS: build into a temporary file, then rename, so an
# interrupted build never leaves a truncated binary that a later run would trust.
build() {
    local name="$1" dir="$2" pkg="$3" ldflags="$4" t0=$SECONDS
    [[ -x "$bin/$name" ]] && return 0
    echo "controlplane: building $name ($pkg) ..."
    (cd "$dir" && go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
    mv -f "$bin/.$name.tmp" "$bin/$name"
    echo "controlplane: built $name in $((SECONDS - t0))s"
}

build etcd "$here/etcd" go.etcd.io/etcd/server/v3 \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
build kube-apiserver "$here" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager "$here" k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build helm "$here/helm" helm.sh/helm/v3/cmd/helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"

echo "controlplane: built ${missing[*]} into $bin (cold, $((SECONDS - start))s)"
