#!/usr/bin/env bash
# Build the images the e2e node runs, without a Docker daemon or a registry (docs/images.md):
#   confidential-pods   the repository's Dockerfile, with buildah (chroot isolation), on a Debian bookworm
#                       base made with mmdebstrap (python3, python3-venv, ca-certificates); pip fetches the
#                       dependencies from PyPI
#   kube-scheduler      the e2e control plane's binary (tests/e2e/build.sh), FROM scratch
#   aesmd-standin       tests/e2e/images/standins/aesmd with busybox's /bin/sh (the AESM probes run it)
#   pccs-standin        tests/e2e/images/standins/pccs
# Each is a docker-archive tarball (`ctr -n k8s.io images import <tarball>`), listed with its reference and
# image ID in images.json. Every image runs as 65532:65532 and needs no writable root filesystem.
#
# Output: $E2E_IMAGES_DIR (default: <repo>/.cache/e2e-images/), git-ignored. An image is rebuilt only when its
# inputs' hash (its .stamp-<image>) changed, or with --force; --check only reports (exit 3: some image is
# missing or stale). Needs root (mmdebstrap --mode=root, buildah), buildah, mmdebstrap, busybox-static and Go.
#
# Environment:
#   E2E_IMAGES_DIR      where the tarballs go (default above)
#   SOURCE_DATE_EPOCH   the images' dates (default 1735689600, 2025-01-01): same inputs, same image IDs
#   E2E_DEBIAN_MIRROR   Debian mirror for the base (default http://deb.debian.org/debian; security updates
#                       from E2E_DEBIAN_SECURITY, default http://deb.debian.org/debian-security)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

force=0
check=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --check) check=1 ;;
        -h | --help)
            sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "images/build.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

out="${E2E_IMAGES_DIR:-$repo/.cache/e2e-images}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1735689600}"
registry="localhost/confidential-pods-e2e"
version="$(awk -F'"' '/^version = /{print $2; exit}' "$repo/pyproject.toml")"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$repo/tests/e2e/controlplane/go.mod")"
scheduler_bin="${E2E_BIN_DIR:-$repo/.cache/e2e-bin/$k8s_version}/kube-scheduler"
busybox=/bin/busybox
standins="$here/standins"

declare -A ref=(
    [base]="$registry/debian-python:bookworm"
    [confidential-pods]="$registry/confidential-pods:$version"
    [kube-scheduler]="$registry/kube-scheduler:$k8s_version"
    [aesmd-standin]="$registry/aesmd-standin:$version"
    [pccs-standin]="$registry/pccs-standin:$version"
)
images=(confidential-pods kube-scheduler aesmd-standin pccs-standin)

# The base: Debian bookworm minbase, python3 and its venv module, CA certificates, no documentation.
# mmdebstrap's output is reproducible with SOURCE_DATE_EPOCH for the same mirror content; the empty
# resolv.conf, hostname and hosts are there so that RUN steps (and runtimes) mount over them instead of
# leaving new files in the image.
mirror="${E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${E2E_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
mmdebstrap_args=(
    --variant=minbase --mode=root --format=tar --skip=output/dev
    --include=python3,python3-venv,ca-certificates
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Languages "none"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --customize-hook='for f in resolv.conf hostname hosts; do : >"$1/etc/$f"; chmod 0644 "$1/etc/$f"; done'
    bookworm
)
mirrors=("deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main")

# What each image is made of; a change of any of it (or of this script) rebuilds the image.
context_sources=(pyproject.toml README.md confidential_pods webhook extender certs operate nodeprobe)
context_files() {
    { git -C "$repo" ls-files --cached --others --exclude-standard -- "${context_sources[@]}" 2>/dev/null ||
        (cd "$repo" && find "${context_sources[@]}" -type f); } | grep -v -e '__pycache__/' -e '\.pyc$' | sort
}
tool_version() { "$@" 2>/dev/null | head -1 || echo "missing: $1"; }
contents() { cat "$@" | sha256sum; } # contents only: the same files named another way hash the same
inputs() {
    contents "${BASH_SOURCE[0]}"
    echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ${ref[$1]}"
    case "$1" in
        base)
            tool_version mmdebstrap --version
            printf '%s\n' "${mmdebstrap_args[@]}" "${mirrors[@]}"
            ;;
        confidential-pods)
            inputs base
            tool_version buildah --version
            (cd "$repo" && sha256sum Dockerfile .dockerignore $(context_files))
            ;;
        kube-scheduler) contents "$scheduler_bin" "$repo/tests/e2e/ociarchive.py" "$here/scratch.py" 2>&1 ;;
        aesmd-standin | pccs-standin)
            tool_version go version
            (cd "$standins" && sha256sum go.mod ./*/*.go)
            contents "$busybox" "$repo/tests/e2e/ociarchive.py" "$here/scratch.py" 2>&1
            ;;
    esac
}
stamp_of() { inputs "$1" | sha256sum | awk '{print $1}'; }
current() {
    local archive="$out/$1.tar"
    [[ "$1" == base ]] && archive="$out/base.rootfs.tar"
    [[ -f "$archive" && "$(cat "$out/.stamp-$1" 2>/dev/null)" == "$(stamp_of "$1")" ]]
}

if ((check == 1)); then
    stale=()
    for image in "${images[@]}"; do
        current "$image" || stale+=("$image")
    done
    if ((${#stale[@]})); then
        echo "images/build.sh: missing or stale in $out: ${stale[*]} (run tests/e2e/images/build.sh)"
        exit 3
    fi
    echo "images/build.sh: ${images[*]} up to date in $out"
    exit 0
fi

if ((EUID != 0)); then
    echo "images/build.sh: must run as root (mmdebstrap --mode=root, buildah with chroot isolation)" >&2
    exit 1
fi
for tool in buildah mmdebstrap go python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "images/build.sh: '$tool' not found (apt-get install --no-install-recommends buildah mmdebstrap busybox-static; Go: docs/e2e.md)" >&2
        exit 1
    fi
done
[[ -x "$busybox" ]] || { echo "images/build.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
[[ -x "$scheduler_bin" ]] || { echo "images/build.sh: $scheduler_bin not found: run tests/e2e/build.sh first" >&2; exit 1; }

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
staging="$(mktemp -d "$out/.build.XXXXXX")"
# buildah's storage lives under the output directory, never in /var/lib/containers, and only for one run.
storage="$staging/storage"
buildah=(buildah --root "$storage" --runroot "$staging/run" --storage-driver vfs)
cleanup() {
    "${buildah[@]}" rm --all >/dev/null 2>&1 || true
    rm -rf "$staging"
}
trap cleanup EXIT

timed() {
    local what="$1" start
    shift
    start=$(date +%s)
    "$@"
    echo "images/build.sh: $what in $(($(date +%s) - start)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

build_base() {
    nice -n 19 mmdebstrap "${mmdebstrap_args[@]}" "$staging/base.rootfs.tar" "${mirrors[@]}" \
        >"$staging/mmdebstrap.log" 2>&1 || { cat "$staging/mmdebstrap.log" >&2; return 1; }
    mv -f "$staging/base.rootfs.tar" "$out/base.rootfs.tar"
}

import_base() {
    local c
    c="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add --quiet "$c" "$out/base.rootfs.tar" / >/dev/null
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd '["python3"]' "$c"
    "${buildah[@]}" commit --quiet --format oci --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" \
        --rm "$c" "${ref[base]}" >/dev/null
}

# The host's CA bundle is mounted (read-only, only while RUN steps run) over the base's, so pip inside
# the build trusts what the host trusts (e.g. a proxy's CA); Debian's pip reads the system bundle.
build_confidential_pods() {
    if ((force == 1)) || ! current base; then
        timed "base ${ref[base]} (mmdebstrap)" build_base
        stamp_of base >"$out/.stamp-base"
    fi
    import_base
    nice -n 19 "${buildah[@]}" bud --isolation chroot --format oci --layers=false --pull-never \
        --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" \
        --build-arg "BASE=${ref[base]}" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        -t "${ref[confidential-pods]}" -f "$repo/Dockerfile" "$repo" \
        >"$staging/bud.log" 2>&1 || { cat "$staging/bud.log" >&2; return 1; }
    "${buildah[@]}" push --quiet "${ref[confidential-pods]}" \
        "docker-archive:$staging/confidential-pods.tar:${ref[confidential-pods]}"
    mv -f "$staging/confidential-pods.tar" "$out/confidential-pods.tar"
}

build_standin() {
    (cd "$standins" && GOTOOLCHAIN=local go vet ./... &&
        CGO_ENABLED=0 GOTOOLCHAIN=local nice -n 19 go build -mod=readonly -trimpath -ldflags='-s -w -buildid=' \
            -o "$staging/$1" "./${1%-standin}")
    (cd "$repo" && python3 -m tests.e2e.images.scratch "$1" "${ref[$1]}" "$out/$1.tar" \
        --binary "$staging/$1" --busybox "$busybox")
}

build_kube_scheduler() {
    (cd "$repo" && python3 -m tests.e2e.images.scratch kube-scheduler "${ref[kube-scheduler]}" \
        "$out/kube-scheduler.tar" --binary "$scheduler_bin")
}

built=0
for image in "${images[@]}"; do
    if ((force == 0)) && current "$image"; then
        continue
    fi
    rm -f "$out/.stamp-$image"
    case "$image" in
        confidential-pods) timed "$image (buildah bud)" build_confidential_pods ;;
        kube-scheduler) timed "$image" build_kube_scheduler ;;
        *) timed "$image" build_standin "$image" ;;
    esac
    stamp_of "$image" >"$out/.stamp-$image"
    built=$((built + 1))
done

# images.json: what the node imports (tests/e2e/images/built.py reads it).
(cd "$repo" && python3 -m tests.e2e.images.built --write "$out" \
    "${ref[confidential-pods]}" "${ref[kube-scheduler]}" "${ref[aesmd-standin]}" "${ref[pccs-standin]}")
if ((built == 0)); then
    echo "images/build.sh: ${images[*]} up to date in $out"
else
    (cd "$out" && du -h "${images[@]/%/.tar}")
fi
