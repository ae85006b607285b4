#!/usr/bin/env bash
# Boots a Debian 12 root with systemd as PID 1 (systemd-nspawn, sharing the
# host's network) with the amd64 .deb installed and a config made by
# `hearth config init` that points at the host's simulator and broker, and
# checks the hardened unit for real: the service reaches active (running),
# which needs the agent's READY=1; systemd's watchdog is fed; the agent runs
# as hearth with no capabilities, no new privileges and a seccomp filter;
# the diagnostics socket answers `hearth status`; telemetry reaches the
# broker.
#
#   scripts/boottest.sh [--dist DIR]
#
# Needs root, systemd-nspawn (systemd-container, installed when missing) and
# the Debian root tarball that scripts/debtest.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."

dist=dist
[ "${1:-}" = --dist ] && dist="$2"
[ "$(id -u)" -eq 0 ] || { echo "boottest: needs root" >&2; exit 1; }
deb="$(ls -t "$dist"/hearth_*_amd64.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || { echo "boottest: no $dist/hearth_*_amd64.deb (run make release)" >&2; exit 1; }
base="${XDG_CACHE_HOME:-$HOME/.cache}/hearth-tools/debian-bookworm-minbase-systemd.tar"
[ -f "$base" ] || { echo "boottest: no $base (scripts/debtest.sh makes it)" >&2; exit 1; }
command -v systemd-nspawn >/dev/null 2>&1 ||
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends systemd-container >/dev/null

work="$(mktemp -d /tmp/boottest.XXXXXX)"
root="$work/root"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$root" && tar -C "$root" -xf "$base" && chmod 0755 "$root"

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "boottest: ok   $*"; }
bad() { failed=$((failed + 1)); echo "boottest: FAIL $*"; }

"$dist/hearthsim-linux-amd64" --modbus 127.0.0.1:0 --mqtt 127.0.0.1:0 >"$work/sim.out" 2>"$work/sim.log" &
pids+=("$!")
for _ in $(seq 50); do grep -q '^simulator' "$work/sim.out" && grep -q '^broker' "$work/sim.out" && break; sleep 0.1; done
modbus="$(sed -n 's/^simulator serving Modbus TCP on \([^ ]*\).*/\1/p' "$work/sim.out")"
broker="$(sed -n 's/^broker listening on tcp:\/\/\(.*\)$/\1/p' "$work/sim.out")"
[ -n "$modbus" ] && [ -n "$broker" ] || { cat "$work/sim.log" >&2; echo "boottest: simulator did not start" >&2; exit 1; }

cp "$deb" "$root/tmp/hearth.deb"
chroot "$root" dpkg -i /tmp/hearth.deb >/dev/null 2>&1 && ok "dpkg -i $(basename "$deb")" || bad "dpkg -i"
chroot "$root" hearth config init --force --gateway-id boot-gw --broker "tcp://$broker" --device-address "$modbus" >/dev/null 2>&1 &&
  ok "hearth config init" || bad "hearth config init"
# A short boot delay keeps the check quick; everything else is as installed.
printf '  boot_delay: 1s\n' >>"$root/etc/hearth/hearth.yaml"

mosquitto_sub -h 127.0.0.1 -p "${broker##*:}" -i boottest-sub -q 1 -t "hearth/v1/boot-gw/telemetry" -C 3 -W 120 \
  >"$work/telemetry.txt" 2>/dev/null &
sub=$!
pids+=("$sub")
timeout 180 systemd-nspawn --register=no --keep-unit --quiet -D "$root" -b >"$work/boot.log" 2>&1 &
pids+=("$!")
nspawn=$!

# in_ns runs a command inside the booted container.
in_ns() {
  local init
  init="$(pgrep -P "$(pgrep -P "$nspawn" | head -1)" -x systemd | head -1)"
  [ -n "$init" ] || return 1
  nsenter -t "$init" -m -u -i -n -p "$@"
}
state=""
for _ in $(seq 90); do
  state="$(in_ns systemctl show hearth -p ActiveState -p SubState --value 2>/dev/null | tr '\n' ' ' || true)"
  [ "$state" = "active running " ] && break
  sleep 1
done
[ "$state" = "active running " ] && ok "hearth.service active (running): READY=1 reached systemd" ||
  { bad "hearth.service is '$state'"; in_ns journalctl -u hearth --no-pager 2>/dev/null | tail -20 || true; }

if wait "$sub" && [ "$(grep -c '"soc_pct":{"v":' "$work/telemetry.txt")" -ge 3 ]; then
  ok "3 telemetry batches from the service reached the broker"
else
  bad "telemetry from the service did not arrive"
fi
sleep 16 # past half of WatchdogSec=30s: the agent must have fed the watchdog by now
wd="$(in_ns systemctl show hearth -p WatchdogTimestampMonotonic --value 2>/dev/null || echo 0)"
act="$(in_ns systemctl show hearth -p ActiveEnterTimestampMonotonic --value 2>/dev/null || echo 0)"
[ "${wd:-0}" -gt "${act:-0}" ] && ok "systemd's watchdog fed after start (WatchdogSec=30s)" || bad "watchdog not fed (last $wd, active since $act)"
restarts="$(in_ns systemctl show hearth -p NRestarts --value 2>/dev/null || echo ?)"
[ "$restarts" = 0 ] && ok "no restarts" || bad "NRestarts=$restarts"

pid="$(in_ns systemctl show hearth -p MainPID --value 2>/dev/null || echo 0)"
status="$(in_ns cat "/proc/$pid/status" 2>/dev/null || true)"
grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$status" && grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$status" &&
  ok "no capabilities (effective and bounding set empty)" || bad "capabilities: $(grep '^Cap' <<<"$status" | tr '\n' ' ')"
grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status" && ok "NoNewPrivs" || bad "NoNewPrivs not set"
grep -q '^Seccomp:[[:space:]]*2$' <<<"$status" && ok "seccomp filter active" || bad "no seccomp filter"
uid="$(in_ns id -u hearth 2>/dev/null || echo none)"
grep -q "^Uid:[[:space:]]*${uid}[[:space:]]" <<<"$status" && ok "runs as hearth (uid $uid)" || bad "not running as hearth: $(grep '^Uid' <<<"$status")"
in_ns id -nG hearth 2>/dev/null | grep -qw dialout && ok "hearth in dialout" || bad "hearth not in dialout"
[ "$(in_ns stat -c '%a %U:%G' /run/hearth/hearth.sock 2>/dev/null)" = "660 hearth:hearth" ] &&
  ok "diagnostics socket /run/hearth/hearth.sock 660 hearth:hearth" || bad "socket: $(in_ns ls -l /run/hearth 2>&1 | tr '\n' ' ')"
out="$(in_ns hearth status 2>&1 || true)"
grep -q "connected" <<<"$out" && ok "hearth status through the socket: uplink connected" || bad "hearth status: $out"
score="$(in_ns systemd-analyze security hearth --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for hearth.service: \([0-9.]*\).*/\1/p')"
[ -n "$score" ] && ok "systemd-analyze security on the running unit: $score" || bad "no security score"
in_ns systemctl stop hearth >/dev/null 2>&1 || true
res="$(in_ns systemctl show hearth -p Result -p ActiveState --value 2>/dev/null | tr '\n' ' ')"
[ "$res" = "success inactive " ] && ok "systemctl stop: clean exit" || bad "after stop: $res"

echo "boottest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
