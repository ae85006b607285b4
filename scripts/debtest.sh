#!/usr/bin/env bash
# Installs the amd64 .deb into a fresh Debian root and checks what it left:
# files, the hearth user, the config, the data folder, the enabled unit; then
# upgrade (an edited config and the data survive), rollback, remove (config,
# data and user stay) and purge (they go). Then the same for
# scripts/install.sh run twice (idempotent) and its uninstall.
#
#   scripts/debtest.sh [--dist DIR]
#
# Needs root and debootstrap. The Debian root (bookworm, minbase plus
# systemd) is made once and kept as a tarball in ~/.cache/hearth-tools;
# HEARTH_DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

dist=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist="$2"; shift 2 ;;
    *) echo "debtest: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "debtest: needs root (chroot, dpkg)" >&2; exit 1; }
deb="$(ls -t "$dist"/hearth_*_amd64.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || { echo "debtest: no $dist/hearth_*_amd64.deb (run make release)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mirror="${HEARTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hearth-tools"
base="$cache/debian-bookworm-minbase-systemd.tar"
if [ ! -f "$base" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d /tmp/debtest-bootstrap.XXXXXX)"
  echo "debtest: debootstrap bookworm (minbase + systemd) from $mirror, once" >&2
  debootstrap --variant=minbase --include=systemd bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$tmp"; exit 1; }
  tar -C "$tmp" -cf "$base.part" . && mv "$base.part" "$base"
  rm -rf "$tmp"
fi

root="$(mktemp -d /tmp/debtest-root.XXXXXX)"
trap 'rm -rf "$root"' EXIT
tar -C "$root" -xf "$base"
chmod 0755 "$root"  # mktemp made it 0700; the hearth user must reach /

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "debtest: ok   $*"; }
bad() { failed=$((failed + 1)); echo "debtest: FAIL $*"; }
# check DESCRIPTION COMMAND...: runs the command in the host shell.
check() { local d="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi; }
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
stat_of() { in_root stat -c '%a %U:%G' "$1"; }

# The installed state both installers must leave.
check_installed() {
  local how="$1" unitdir="$2"
  check "$how: /usr/bin/hearth runs" in_root /usr/bin/hearth version
  check "$how: unit in $unitdir" test -f "$root$unitdir/hearth.service"
  check "$how: unit enabled (multi-user.target.wants)" test -L "$root/etc/systemd/system/multi-user.target.wants/hearth.service"
  local pw
  pw="$(in_root getent passwd hearth || true)"
  check "$how: system user hearth, home /var/lib/hearth, shell nologin" \
    bash -c "[[ '$pw' =~ ^hearth:x:([0-9]+):[0-9]+:[^:]*:/var/lib/hearth:/usr/sbin/nologin$ ]] && [ \${BASH_REMATCH[1]} -lt 1000 ]"
  check "$how: hearth is in dialout" bash -c "chroot '$root' id -nG hearth | tr ' ' '\n' | grep -qx dialout"
  check "$how: /etc/hearth/hearth.yaml is 640 root:hearth" test "$(stat_of /etc/hearth/hearth.yaml)" = "640 root:hearth"
  check "$how: /var/lib/hearth is 750 hearth:hearth" test "$(stat_of /var/lib/hearth)" = "750 hearth:hearth"
  check "$how: the config passes hearth config check" in_root /usr/bin/hearth config check /etc/hearth/hearth.yaml
}

echo "debtest: $deb into a fresh bookworm root" >&2
cp "$deb" "$root/tmp/hearth.deb"
out="$(in_root dpkg -i /tmp/hearth.deb 2>&1)" && ok "dpkg -i $(basename "$deb")" || { bad "dpkg -i: $out"; }
check "dpkg -i: bash completion installed" test -s "$root/usr/share/bash-completion/completions/hearth"
check "dpkg -i: zsh completion installed" test -s "$root/usr/share/zsh/vendor-completions/_hearth"
check "dpkg -i: manual page installed" test -s "$root/usr/share/man/man1/hearth.1.gz"
echo "$out" | sed 's/^/  | /'
check_installed deb /lib/systemd/system
check "deb: fresh config is the example" cmp "$root/etc/hearth/hearth.yaml" "$root/usr/share/hearth/hearth.example.yaml"
check "deb: says the config must be edited first" grep -q "edit\|set gateway_id" <<<"$out"
check "deb: systemd-analyze verify accepts the unit" in_root systemd-analyze verify /lib/systemd/system/hearth.service
check "deb: systemd-analyze security rates the unit 2.0 or better" \
  in_root systemd-analyze security --offline=true --threshold=20 --no-pager /lib/systemd/system/hearth.service

# Upgrade: an edited config and the data must survive.
sed -i 's/^gateway_id: gw-0001$/gateway_id: gw-edited-by-installer/' "$root/etc/hearth/hearth.yaml"
in_root su -s /bin/sh hearth -c 'echo keep > /var/lib/hearth/marker'
edited="$(sha256sum <"$root/etc/hearth/hearth.yaml")"
v1="$(dpkg-deb -f "$deb" Version)"
rm -rf "$root/tmp/v2" && dpkg-deb -R "$deb" "$root/tmp/v2"
sed -i "s/^Version: .*/Version: ${v1}+upgradetest/" "$root/tmp/v2/DEBIAN/control"
dpkg-deb -b "$root/tmp/v2" "$root/tmp/hearth-v2.deb" >/dev/null
out="$(in_root dpkg -i /tmp/hearth-v2.deb 2>&1)" && ok "upgrade to ${v1}+upgradetest" || bad "upgrade: $out"
check "upgrade: dpkg has the new version" test "$(in_root dpkg-query -W -f '${Version}' hearth)" = "${v1}+upgradetest"
check "upgrade: edited config kept byte for byte" test "$(sha256sum <"$root/etc/hearth/hearth.yaml")" = "$edited"
check "upgrade: data kept" test "$(cat "$root/var/lib/hearth/marker")" = keep
check "upgrade: config still 640 root:hearth" test "$(stat_of /etc/hearth/hearth.yaml)" = "640 root:hearth"

# Rollback: the previous package over the new one.
out="$(in_root dpkg -i /tmp/hearth.deb 2>&1)" && ok "rollback to $v1" || bad "rollback: $out"
check "rollback: dpkg has the old version" test "$(in_root dpkg-query -W -f '${Version}' hearth)" = "$v1"
check "rollback: edited config kept" test "$(sha256sum <"$root/etc/hearth/hearth.yaml")" = "$edited"

# Remove keeps config, data and user; purge removes them.
check "dpkg -r hearth" in_root dpkg -r hearth
check "remove: binary gone" test ! -e "$root/usr/bin/hearth"
check "remove: unit gone and disabled" test ! -e "$root/lib/systemd/system/hearth.service" -a ! -L "$root/etc/systemd/system/multi-user.target.wants/hearth.service"
check "remove: config kept" test "$(sha256sum <"$root/etc/hearth/hearth.yaml")" = "$edited"
check "remove: data kept" test -f "$root/var/lib/hearth/marker"
check "remove: user kept" in_root getent passwd hearth
check "dpkg -P hearth" in_root dpkg -P hearth
check "purge: config, data and user gone" bash -c "[ ! -e '$root/etc/hearth' ] && [ ! -e '$root/var/lib/hearth' ] && ! chroot '$root' getent passwd hearth && ! chroot '$root' getent group hearth"

# scripts/install.sh from a release folder, twice.
src="$root/tmp/src"
mkdir -p "$src/scripts" "$src/packaging" "$src/configs" "$src/dist"
cp scripts/install.sh "$src/scripts/"
cp packaging/hearth.service packaging/60-hearth-watchdog.rules "$src/packaging/"
cp configs/hearth.example.yaml "$src/configs/"
cp "$dist/hearth-linux-amd64" "$src/dist/"
out="$(in_root /tmp/src/scripts/install.sh install 2>&1)" && ok "install.sh install" || bad "install.sh install: $out"
echo "$out" | sed 's/^/  | /'
check_installed install.sh /etc/systemd/system
sed -i 's/^gateway_id: gw-0001$/gateway_id: gw-script-edit/' "$root/etc/hearth/hearth.yaml"
edited="$(sha256sum <"$root/etc/hearth/hearth.yaml")"
out="$(in_root /tmp/src/scripts/install.sh install 2>&1)" && ok "install.sh install, second run" || bad "install.sh second run: $out"
check "install.sh second run: created nothing new" bash -c "! grep -q 'created\|wrote\|added' <<<'$out'"
check "install.sh second run: edited config kept" test "$(sha256sum <"$root/etc/hearth/hearth.yaml")" = "$edited"
check "install.sh second run: still one hearth user" test "$(grep -c '^hearth:' "$root/etc/passwd")" = 1
check "install.sh uninstall" in_root /tmp/src/scripts/install.sh uninstall
check "uninstall: binary and unit gone" test ! -e "$root/usr/bin/hearth" -a ! -e "$root/etc/systemd/system/hearth.service"
check "uninstall: config, data and user kept" bash -c "[ -f '$root/etc/hearth/hearth.yaml' ] && [ -d '$root/var/lib/hearth' ] && chroot '$root' getent passwd hearth"
check "install.sh uninstall --purge" in_root /tmp/src/scripts/install.sh uninstall --purge
check "purge: config, data and user gone" bash -c "[ ! -e '$root/etc/hearth' ] && [ ! -e '$root/var/lib/hearth' ] && ! chroot '$root' getent passwd hearth"

echo "debtest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
