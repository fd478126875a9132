#!/usr/bin/env bash
# Build the real cluster for the e2e suite from the Go module in tests/e2e/controlplane (one pinned Kubernetes
# release, see docs/e2e.md): kube-apiserver, kube-scheduler, kube-controller-manager and etcd; kubelet and
# sgx-device-plugin for the e2e node (tests/e2e/node.py); the pause program of the pinned release
# (build/pause/linux/pause.c, compiled static with gcc as upstream does); and goref, the reference extender in Go of benchmarks/goref
# (tests/extender/test_goref.py checks it answers as ours does).
#
# Output: $E2E_BIN_DIR (default: <repo>/.cache/e2e-bin/<kubernetes version>/), git-ignored. The binaries are
# reused while the stamp (hash of go.mod, go.sum, the main packages, pause.c and the toolchains) matches; pass
# --force to rebuild anyway. The compile runs under `nice -n 19` with at most 2 parallel jobs: the machine is
# shared.
#
# Environment:
#   E2E_BIN_DIR         where the binaries go (default above)
#   E2E_BUILD_JOBS      parallel compile jobs, 1 or 2 (default 2; higher values are capped at 2)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
module_dir="$here/controlplane"
components=(kube-apiserver kube-scheduler kube-controller-manager etcd kubelet sgx-device-plugin)
# Every file build.sh writes and checks (pause is compiled with gcc, the rest with go).
products=("${components[@]}" pause)

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: 'go' not found: install Go $(awk '/^go /{print $2}' "$module_dir/go.mod") or newer" >&2
    exit 1
fi

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$module_dir/go.mod")"
if [[ -z "$k8s_version" ]]; then
    echo "build.sh: no k8s.io/kubernetes requirement in $module_dir/go.mod" >&2
    exit 1
fi
out_dir="${E2E_BIN_DIR:-$repo/.cache/e2e-bin/$k8s_version}"

jobs="${E2E_BUILD_JOBS:-2}"
if ! [[ "$jobs" =~ ^[0-9]+$ ]] || ((jobs < 1)); then
    jobs=1
elif ((jobs > 2)); then
    jobs=2
fi

# Version stamping as upstream's hack/lib/version.sh does, so /version reports the pinned release.
ldflags() {
    local v="${k8s_version#v}" pkg=k8s.io/component-base/version
    local major="${v%%.*}" rest="${v#*.}"
    echo "-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=${rest%%.*}" \
        "-X $pkg.gitTreeState=clean"
}

# pause.c of the pinned release, from the module cache (the module zip keeps build/pause/), compiled with
# the flags of upstream's build/pause/Makefile and the version it stamps.
kubernetes_dir="$(cd "$module_dir" && go mod download -json "k8s.io/kubernetes@$k8s_version" | awk -F'"' '$2 == "Dir" {print $4}')"
pause_src="$kubernetes_dir/build/pause/linux/pause.c"
pause_tag="$(awk '$1 == "TAG" && $2 == "?=" {print $3}' "$kubernetes_dir/build/pause/Makefile")"
pause_cflags=(-Os -Wall -Werror -static "-DVERSION=v$pause_tag-$k8s_version")
if ! command -v gcc >/dev/null 2>&1; then
    echo "build.sh: 'gcc' not found: the pause image needs it (apt-get install gcc libc6-dev)" >&2
    exit 1
fi

stamp="$(
    cd "$module_dir"
    {
        go version
        echo "CGO_ENABLED=0 -trimpath"
        ldflags
        sha256sum go.mod go.sum cmd/*/main.go "$pause_src"
        gcc --version | head -1
        echo "${pause_cflags[*]}"
    } | sha256sum | awk '{print $1}'
)"

up_to_date() {
    [[ -f "$out_dir/.stamp" ]] && [[ "$(cat "$out_dir/.stamp")" == "$stamp" ]] || return 1
    local c
    for c in "${products[@]}"; do
        [[ -x "$out_dir/$c" ]] || return 1
    done
}

# goref first: a small module (the Kubernetes types only), with a stamp of its own.
goref_dir="$repo/benchmarks/goref"
goref_stamp="$(cd "$goref_dir" && { go version; sha256sum go.mod go.sum ./*.go; } | sha256sum | awk '{print $1}')"
mkdir -p "$out_dir"
if ((force == 1)) || [[ ! -x "$out_dir/goref" ]] || [[ "$(cat "$out_dir/.stamp-goref" 2>/dev/null)" != "$goref_stamp" ]]; then
    echo "build.sh: building goref (benchmarks/goref) into $out_dir"
    (cd "$goref_dir" && CGO_ENABLED=0 nice -n 19 go build -p "$jobs" -mod=readonly -trimpath -o "$out_dir/goref" .)
    echo "$goref_stamp" >"$out_dir/.stamp-goref"
fi

if ((force == 0)) && up_to_date; then
    echo "build.sh: control plane $k8s_version is up to date in $out_dir"
    exit 0
fi

mkdir -p "$out_dir"
staging="$(mktemp -d "$out_dir/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "build.sh: building ${components[*]} (Kubernetes $k8s_version, $(go version | awk '{print $3}'), -p $jobs, nice 19) into $out_dir"
start=$(date +%s)
(
    cd "$module_dir"
    # Static binaries as upstream ships them; the Go ones need no C toolchain.
    CGO_ENABLED=0 nice -n 19 go build -p "$jobs" -mod=readonly -trimpath -ldflags="$(ldflags)" \
        -o "$staging/" "${components[@]/#/./cmd/}"
)
nice -n 19 gcc "${pause_cflags[@]}" -o "$staging/pause" "$pause_src"
end=$(date +%s)

for c in "${components[@]}"; do
    case "$c" in
        sgx-device-plugin) "$staging/$c" --help 2>&1 | grep -- -mode >/dev/null ;;
        *) "$staging/$c" --version >/dev/null ;;
    esac
done
"$staging/pause" -v | grep "^pause.c v$pause_tag-" >/dev/null
for c in "${products[@]}"; do
    mv -f "$staging/$c" "$out_dir/$c"
done
echo "$stamp" >"$out_dir/.stamp"
echo "build.sh: built in $((end - start)) s:"
(cd "$out_dir" && du -h "${products[@]}")
