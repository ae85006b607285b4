#!/bin/sh
# Installs, sets up or removes the hearth agent as a systemd service.
#
#   install.sh [install] [--binary FILE] [--start|--no-start]
#       copy the binary to /usr/bin/hearth, the unit to /etc/systemd/system
#       and the watchdog udev rule, then do what `setup` does
#   install.sh setup [--start|--no-start]
#       the system user `hearth` (group dialout for serial ports),
#       /etc/hearth/hearth.yaml from the example when absent (never
#       overwritten), /var/lib/hearth, enable the unit and (re)start it
#   install.sh uninstall [--purge]
#       stop and disable the service and remove what `install` copied;
#       config, data and the user stay unless --purge
#
# Every step checks before it acts, so running it twice changes nothing the
# second time. The .deb's postinst runs `setup`. The service is started when
# the config is no longer the untouched example (or with --start); a fresh
# install says what to edit first. Without a running systemd (a chroot, an
# image being built) the unit is enabled offline and not started.
#
# Paths can be moved for tests and image builds with HEARTH_ETC,
# HEARTH_DATA, HEARTH_BINDIR, HEARTH_UNITDIR, HEARTH_UDEVDIR, HEARTH_SHARE.
set -eu

etc="${HEARTH_ETC:-/etc/hearth}"
data="${HEARTH_DATA:-/var/lib/hearth}"
bindir="${HEARTH_BINDIR:-/usr/bin}"
unitdir="${HEARTH_UNITDIR:-/etc/systemd/system}"
udevdir="${HEARTH_UDEVDIR:-/etc/udev/rules.d}"
share="${HEARTH_SHARE:-/usr/share/hearth}"
user=hearth
here="$(cd "$(dirname "$0")" && pwd)"

say() { echo "hearth install: $*" >&2; }
die() { say "$*"; exit 1; }

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# example_config finds the example config: installed by the package, or in
# the source tree next to this script.
example_config() {
  for f in "$share/hearth.example.yaml" "$here/../configs/hearth.example.yaml" "$here/hearth.example.yaml"; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

ensure_user() {
  getent group dialout >/dev/null || { groupadd --system dialout; say "created group dialout"; }
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --user-group --home-dir "$data" --no-create-home \
      --shell /usr/sbin/nologin --comment "hearth gateway agent" --groups dialout "$user"
    say "created system user $user (groups: $user, dialout)"
  elif ! id -nG "$user" | tr ' ' '\n' | grep -qx dialout; then
    usermod --append --groups dialout "$user"
    say "added $user to dialout"
  fi
}

ensure_dirs() {
  install -d -m 0755 -o root -g root "$etc"
  install -d -m 0750 -o "$user" -g "$user" "$data"
}

# ensure_config copies the example into place only when no config exists:
# an installer's edits survive every upgrade and every re-run.
ensure_config() {
  if [ -e "$etc/hearth.yaml" ]; then
    return 0
  fi
  ex="$(example_config)" || die "no example config found (looked in $share and $here/../configs)"
  install -m 0640 -o root -g "$user" "$ex" "$etc/hearth.yaml"
  say "wrote $etc/hearth.yaml from the example: set gateway_id, devices and uplink, then check it with: hearth config check $etc/hearth.yaml"
}

config_untouched() {
  ex="$(example_config)" || return 1
  cmp -s "$ex" "$etc/hearth.yaml"
}

enable_and_start() {
  start="$1"
  if ! command -v systemctl >/dev/null 2>&1; then
    say "systemctl not found: the unit is installed but not enabled; start the agent with: hearth run --config $etc/hearth.yaml"
    return 0
  fi
  if ! systemd_running; then
    # Offline enable only creates the wants/ link, which works in a chroot.
    systemctl --quiet enable hearth.service 2>/dev/null || systemctl enable hearth.service
    say "systemd is not running here: hearth.service is enabled and will start at the next boot"
    return 0
  fi
  systemctl daemon-reload
  systemctl --quiet enable hearth.service
  if [ "$start" = auto ] && config_untouched; then
    say "hearth.service is enabled but not started: $etc/hearth.yaml is still the example; edit it, then: systemctl start hearth"
    return 0
  fi
  if [ "$start" = no ]; then
    say "hearth.service is enabled; not started (--no-start)"
    return 0
  fi
  systemctl restart hearth.service
  say "hearth.service (re)started; follow it with: journalctl -u hearth -f"
}

setup() {
  [ "$(id -u)" -eq 0 ] || die "run as root"
  ensure_user
  ensure_dirs
  ensure_config
  if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    udevadm control --reload-rules 2>/dev/null || true
    udevadm trigger --subsystem-match=watchdog 2>/dev/null || true
  fi
  enable_and_start "$1"
}

# default_binary picks the release binary for this machine's architecture.
default_binary() {
  case "$(uname -m)" in
    x86_64) t=amd64 ;;
    aarch64) t=arm64 ;;
    armv7l) t=armv7 ;;
    armv6l) t=armv6 ;;
    *) return 1 ;;
  esac
  for f in "$here/../dist/hearth-linux-$t" "$here/hearth-linux-$t" "$here/hearth"; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

install_files() {
  bin="$1"
  [ "$(id -u)" -eq 0 ] || die "run as root"
  [ -n "$bin" ] || bin="$(default_binary)" || die "no hearth binary found for $(uname -m); pass --binary FILE"
  [ -f "$bin" ] || die "$bin: no such file"
  "$bin" version >/dev/null 2>&1 || die "$bin does not run on this machine ($(uname -m))"
  unit="$here/../packaging/hearth.service"; [ -f "$unit" ] || unit="$here/hearth.service"
  rules="$here/../packaging/60-hearth-watchdog.rules"; [ -f "$rules" ] || rules="$here/60-hearth-watchdog.rules"
  [ -f "$unit" ] || die "hearth.service not found next to this script"
  install -d "$bindir" "$unitdir" "$udevdir" "$share"
  # Replace the binary atomically: a running agent keeps its old inode.
  install -m 0755 "$bin" "$bindir/.hearth.new" && mv -f "$bindir/.hearth.new" "$bindir/hearth"
  install -m 0644 "$unit" "$unitdir/hearth.service"
  [ -f "$rules" ] && install -m 0644 "$rules" "$udevdir/60-hearth-watchdog.rules"
  if ex="$(example_config)" && [ "$ex" != "$share/hearth.example.yaml" ]; then
    install -m 0644 "$ex" "$share/hearth.example.yaml"
  fi
  say "installed $bindir/hearth ($("$bindir/hearth" version)), $unitdir/hearth.service"
}

uninstall() {
  purge="$1"
  [ "$(id -u)" -eq 0 ] || die "run as root"
  if systemd_running; then
    systemctl --quiet disable --now hearth.service 2>/dev/null || true
  elif command -v systemctl >/dev/null 2>&1; then
    systemctl --quiet disable hearth.service 2>/dev/null || true
  fi
  rm -f "$unitdir/hearth.service" "$udevdir/60-hearth-watchdog.rules" "$bindir/hearth" "$share/hearth.example.yaml"
  rmdir "$share" 2>/dev/null || true
  systemd_running && systemctl daemon-reload || true
  if [ "$purge" = yes ]; then
    rm -rf "$etc" "$data"
    getent passwd "$user" >/dev/null && userdel "$user"
    getent group "$user" >/dev/null && groupdel "$user" 2>/dev/null || true
    say "removed hearth, its config ($etc), its data ($data) and the user $user"
  else
    say "removed hearth; kept $etc, $data and the user $user (--purge removes them)"
  fi
}

cmd=install
case "${1:-}" in
  install|setup|uninstall) cmd="$1"; shift ;;
  -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
bin="" start=auto purge=no
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --start) start=yes; shift ;;
    --no-start) start=no; shift ;;
    --purge) purge=yes; shift ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$cmd" in
  install) install_files "$bin"; setup "$start" ;;
  setup) setup "$start" ;;
  uninstall) uninstall "$purge" ;;
esac
