#!/usr/bin/env bash
# Builds the release: stripped, version-stamped binaries of hearth and
# hearthsim for every gateway architecture, one .deb per architecture, and
# SHA256SUMS, all in dist/.
#
#   scripts/release.sh [--version V] [--out DIR] [TARGET...]
#
# TARGET is amd64, arm64, armv7 or armv6 (default: all four). Run as root it
# installs the missing Debian cross compilers; otherwise it names them.
#
# Why every hearth binary is static: go-sqlite3 needs cgo, and a binary that
# carries its own libc runs on any gateway distribution (Debian, Raspberry Pi
# OS, Yocto builds) whatever glibc version it ships. The tags netgo and
# osusergo keep Go from calling glibc's NSS, which cannot work statically.
#
# armv6 (Raspberry Pi Zero/1, ARM1176): Debian's armhf libraries are built for
# ARMv7 and die with SIGILL on an ARMv6 core. Debian's armel toolchain targets
# ARMv5TE, which ARMv6 runs; the C code (SQLite) is compiled for ARMv6KZ with
# VFPv2 (softfp: VFP instructions, armel calling convention) and Go with
# GOARM=6. Statically linked, the binary needs nothing from the board's
# userland, so it runs on a hard-float Raspberry Pi OS as well.
# scripts/selfcheck.sh proves it under qemu-arm-static -cpu arm1176.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${VERSION:-}"
out=dist
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    amd64|arm64|armv7|armv6) targets+=("$1"); shift ;;
    *) echo "release: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(amd64 arm64 armv7 armv6)
[ -n "$version" ] || version="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
export PATH="$PATH:/usr/local/go/bin"
GO="${GO:-go}"
NFPM_VERSION=v2.45.2
module=github.com/hearth-energy/hearth

# target -> GOARCH GOARM C-compiler Debian-arch Debian-packages CFLAGS
target_vars() {
  goarm="" cflags="-O2"
  case "$1" in
    amd64) goarch=amd64 cc=x86_64-linux-gnu-gcc debarch=amd64 pkgs="gcc libc6-dev" ;;
    arm64) goarch=arm64 cc=aarch64-linux-gnu-gcc debarch=arm64 pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armv7) goarch=arm goarm=7 cc=arm-linux-gnueabihf-gcc debarch=armhf pkgs="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
    armv6) goarch=arm goarm=6 cc=arm-linux-gnueabi-gcc debarch=armhf pkgs="gcc-arm-linux-gnueabi libc6-dev-armel-cross"
           cflags="-O2 -march=armv6kz -mfpu=vfp -mfloat-abi=softfp" ;;
  esac
}

# Cross compilers: install what is missing when root, else say what to install.
missing=()
for t in "${targets[@]}"; do
  target_vars "$t"
  # shellcheck disable=SC2206 # pkgs is a space-separated list
  command -v "$cc" >/dev/null 2>&1 || missing+=($pkgs)
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "release: missing C cross compilers; install them with:" >&2
    echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "release: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nfpm builds the .deb files; kept outside go.mod, in a per-user tool folder.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/hearth-tools/nfpm-$NFPM_VERSION"
nfpm="$tools/nfpm"
if [ ! -x "$nfpm" ]; then
  echo "release: installing nfpm $NFPM_VERSION into $tools" >&2
  GOBIN="$tools" "$GO" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi

# Debian versions must start with a digit: v1.2.3 -> 1.2.3, a bare commit
# id -> 0.0.0~git<id>.
case "$version" in
  v[0-9]*) debversion="${version#v}" ;;
  [0-9]*) debversion="$version" ;;
  *) debversion="0.0.0~git${version}" ;;
esac
debversion="${debversion//-/+}"

mkdir -p "$out"
# Shell completions and the manual page come from the command table of the host's hearth: the
# same on every architecture, so made once.
mkdir -p "$out/completion"
"$GO" run ./cmd/hearth completion bash > "$out/completion/hearth.bash"
"$GO" run ./cmd/hearth completion zsh > "$out/completion/_hearth"
"$GO" run ./cmd/hearth help --man | gzip -9n > "$out/completion/hearth.1.gz"
build_date="$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w -X $module.Version=$version -X $module.BuildDate=$build_date"
for t in "${targets[@]}"; do
  target_vars "$t"
  echo "release: $t (GOARCH=$goarch${goarm:+ GOARM=$goarm}, CC=$cc)" >&2
  # Both binaries carry SQLite (hearthsim runs whole agents in its fleet).
  for cmd in hearth hearthsim; do
    env CGO_ENABLED=1 GOOS=linux GOARCH="$goarch" GOARM="$goarm" CC="$cc" CGO_CFLAGS="$cflags" \
      "$GO" build -trimpath -tags netgo,osusergo,sqlite_omit_load_extension \
        -ldflags "$ldflags -linkmode external -extldflags -static" \
        -o "$out/$cmd-linux-$t" "./cmd/$cmd"
  done
  rm -f "$out"/hearth_*_"$t".deb
  HEARTH_BIN="$out/hearth-linux-$t" HEARTH_COMPLETION="$out/completion" HEARTH_DEB_ARCH="$debarch" HEARTH_DEB_VERSION="$debversion" \
    "$nfpm" package --config packaging/nfpm.yaml --packager deb \
      --target "$out/hearth_${debversion}_${t}.deb" | sed "s/^/  /" >&2
done

(cd "$out" && rm -f SHA256SUMS && sha256sum hearth-linux-* hearthsim-linux-* hearth_*.deb > SHA256SUMS)
echo "release: $version in $out/:" >&2
(cd "$out" && ls -l hearth-linux-* hearthsim-linux-* hearth_*.deb SHA256SUMS | awk '{printf "  %10d  %s\n", $5, $9}') >&2
