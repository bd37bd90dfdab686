#!/usr/bin/env bash
# Build what the real node of the local environment needs (devenv/node.py), next to the
# control plane that tests/controlplane/build.sh builds:
#   - the Debian packages of the runtime (containerd, runc, CNI plugins, iptables, nftables,
#     conntrack, socat, umoci), installed with apt-get when missing (root only);
#   - kubelet, kube-proxy and kube-scheduler from the same pinned k8s.io/kubernetes module
#     as the control plane (tests/controlplane/go.mod);
#   - CoreDNS with the cluster-internal plugins only (tests/node/coredns);
#   - the pause image: build/pause/linux/pause.c from the k8s.io/kubernetes module in the Go
#     module cache, gcc -Os -static, packed by umoci into an OCI archive that `ctr images
#     import` loads under the name containerd uses as its sandbox image;
#   - the probe the real-node tests run in pods (tests/node/probe), as an image the same way.
# Everything goes to $KUBETASKS_CACHE/bin/<k8s-version>/ (default ~/.cache/kubetasks), outside
# the work tree; a second run finds it there and does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
controlplane="$here/../controlplane"
cache="${KUBETASKS_CACHE:-$HOME/.cache/kubetasks}"
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$controlplane/go.mod")"
coredns_version="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/coredns/go.mod")"
bin="$cache/bin/$k8s_version"
# The tag the pause image is loaded under; devenv/node.py names the same one as containerd's
# sandbox_image (a test checks they agree).
pause_image="registry.k8s.io/pause:3.10.1"
# Fully qualified: the CRI looks a pod's `kubetasks/node-probe:dev` up as docker.io/...
probe_image="docker.io/kubetasks/node-probe:dev"
start=$SECONDS

# --- Debian packages -----------------------------------------------------------------------
packages=(containerd runc containernetworking-plugins iptables nftables conntrack socat umoci)
missing_pkgs=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing_pkgs+=("$pkg")
done
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "node: missing Debian packages ${missing_pkgs[*]}; install them as root:" >&2
        echo "  apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
        # In CI the real-node tier must run; elsewhere the tier says why it cannot.
        [[ -n "${CI:-}" ]] && exit 1
        echo "node: continuing without them: the real-node tier will not run here" >&2
    else
        t0=$SECONDS
        echo "node: installing ${missing_pkgs[*]} ..."
        apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends "${missing_pkgs[@]}" >/dev/null
        echo "node: installed the packages in $((SECONDS - t0))s"
    fi
fi
# containerd's Debian package starts the system containerd where systemd runs; the node
# runs its own with private sockets and state and needs nothing from that one.

# --- binaries ---------------------------------------------------------------------------------
if ! command -v go >/dev/null; then
    echo "node: 'go' is not on PATH; install Go >= 1.24" >&2
    exit 1
fi
mkdir -p "$bin"
export CGO_ENABLED=0

major="${k8s_version#v}"; major="${major%%.*}"
minor="${k8s_version#v*.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

built=()
build() {
    local name="$1" dir="$2" pkg="$3" ldflags="$4" t0=$SECONDS
    [[ -x "$bin/$name" ]] && return 0
    echo "node: building $name ($pkg) ..."
    (cd "$dir" && go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
    mv -f "$bin/.$name.tmp" "$bin/$name"
    built+=("$name")
    echo "node: built $name in $((SECONDS - t0))s"
}

build kubelet "$controlplane" k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"
build kube-proxy "$controlplane" k8s.io/kubernetes/cmd/kube-proxy "$k8s_ldflags"
build kube-scheduler "$controlplane" k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build coredns "$here/coredns" . \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version"

# --- images: the pause image and the tests' probe ---------------------------------------------
# image BINARY NAME:TAG ARCHIVE USER: a one-file OCI image (BINARY as /ENTRY), packed by umoci
# into an archive that `ctr images import` names NAME:TAG.
image() {
    local binary="$1" name="$2" archive="$3" user="$4" work
    local tag="${name##*:}" entry="/$(basename "$binary")"
    work="$(mktemp -d)"
    umoci init --layout "$work/layout"
    umoci new --image "$work/layout:$tag"
    umoci unpack --rootless --image "$work/layout:$tag" "$work/bundle" >/dev/null
    install -m 0755 "$binary" "$work/bundle/rootfs$entry"
    umoci repack --image "$work/layout:$tag" "$work/bundle"
    umoci config --image "$work/layout:$tag" --config.entrypoint "$entry" --config.user "$user" \
        --architecture amd64 --os linux
    umoci gc --layout "$work/layout"
    # ctr names an imported image by this annotation (the OCI ref.name is only the tag).
    python3 - "$work/layout/index.json" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = name
json.dump(index, open(path, "w"))
PY
    tar -C "$work/layout" -cf "$archive.tmp" .
    mv -f "$archive.tmp" "$archive"
    rm -rf "$work"
}

have_umoci=1
command -v umoci >/dev/null || { have_umoci=0; echo "node: no umoci: images not built" >&2; }

if [[ $have_umoci -eq 1 && ! -s "$bin/pause.oci.tar" ]]; then
    t0=$SECONDS
    src="$(go env GOMODCACHE)/k8s.io/kubernetes@$k8s_version/build/pause/linux/pause.c"
    [[ -f "$src" ]] || (cd "$controlplane" && go mod download k8s.io/kubernetes)
    scratch="$(mktemp -d)"
    gcc -Os -static -Wall -DVERSION="v${pause_image##*:}-kubetasks" -o "$scratch/pause" "$src"
    strip "$scratch/pause"
    image "$scratch/pause" "$pause_image" "$bin/pause.oci.tar" 65535:65535
    rm -rf "$scratch"
    built+=(pause.oci.tar)
    echo "node: built the pause image ($pause_image) in $((SECONDS - t0))s"
fi

# The probe changes with the tests, so its archive is keyed by a hash of its source.
probe_hash="$( (echo "$probe_image"; cat "$here/probe/go.mod" "$here/probe/main.go") | sha256sum | cut -c1-12)"
if [[ $have_umoci -eq 1 && ! -s "$bin/probe-$probe_hash.oci.tar" ]]; then
    t0=$SECONDS
    scratch="$(mktemp -d)"
    (cd "$here/probe" && go build -trimpath -ldflags "-s -w" -o "$scratch/probe" .)
    rm -f "$bin"/probe-*.oci.tar
    image "$scratch/probe" "$probe_image" "$bin/probe-$probe_hash.oci.tar" 65532:65532
    rm -rf "$scratch"
    built+=(probe)
    echo "node: built the probe image ($probe_image) in $((SECONDS - t0))s"
fi

if [[ ${#built[@]} -eq 0 && ${#missing_pkgs[@]} -eq 0 ]]; then
    echo "node: everything present in $bin (warm, $((SECONDS - start))s)"
else
    echo "node: built ${built[*]:-nothing} into $bin (cold, $((SECONDS - start))s)"
fi
