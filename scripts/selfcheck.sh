#!/usr/bin/env bash
# Checks the release binaries in dist/ the way a gateway would run them:
# each one under qemu-user with the CPU of the smallest board of its
# architecture, against the host's simulator and broker.
#
#   scripts/selfcheck.sh [--dist DIR] [TARGET...]     end-to-end self-check
#   scripts/selfcheck.sh --rss TARGET [--seconds N]   RSS of the agent, 2 devices at 1 Hz
#
# For every TARGET (default: each one built in dist/):
#   - `hearth version` and `hearthsim version` run and agree with the amd64 build;
#   - the agent runs against a simulated battery (Modbus TCP) and an embedded
#     broker served by the host's hearthsim, and at least 3 telemetry batches
#     with a state of charge arrive at the broker within 90 s;
#   - on SIGTERM the agent stops within 15 s with exit code 0.
# When armv6 and armv7 are both checked, the armv7 binary must die with
# SIGILL on the ARM1176 model: proof that the CPU model rejects ARMv7 code,
# so the armv6 binary passing means something.
#
# Needs qemu-user-static and mosquitto-clients (installed when root).
set -euo pipefail
cd "$(dirname "$0")/.."

dist=dist
rss_target="" seconds=120
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist="$2"; shift 2 ;;
    --rss) rss_target="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    amd64|arm64|armv7|armv6) targets+=("$1"); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "selfcheck: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for t in amd64 arm64 armv7 armv6; do [ -f "$dist/hearth-linux-$t" ] && targets+=("$t"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "selfcheck: no binaries in $dist/ (run make release)" >&2; exit 1; }

need=()
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "selfcheck: install ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The host runs the simulator and broker natively.
host_sim="$dist/hearthsim-linux-amd64"
[ -x "$host_sim" ] || host_sim="bin/hearthsim"
[ -x "$host_sim" ] || { echo "selfcheck: no amd64 hearthsim in $dist/ or bin/" >&2; exit 1; }

# emulator prints the command prefix that runs a target's binary on the
# oldest CPU of its class: Pi 3 (Cortex-A53), Pi 2 (Cortex-A7), Pi Zero/1
# (ARM1176).
emulator() {
  case "$1" in
    amd64) echo "" ;;
    arm64) echo "qemu-aarch64-static -cpu cortex-a53" ;;
    armv7) echo "qemu-arm-static -cpu cortex-a7" ;;
    armv6) echo "qemu-arm-static -cpu arm1176" ;;
  esac
}

work="$(mktemp -d /tmp/release-selfcheck.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "selfcheck: FAIL: $*" >&2; exit 1; }

# start_sim NAME ARGS... starts a host hearthsim and sets sim_modbus and
# sim_broker from what it prints.
start_sim() {
  local name="$1"; shift
  "$host_sim" "$@" >"$work/$name.out" 2>"$work/$name.log" &
  sim_pid=$!
  pids+=("$sim_pid")
  sim_modbus="" sim_broker=""
  for _ in $(seq 100); do
    sim_modbus="$(sed -n 's/^simulator serving Modbus TCP on \([^ ]*\).*/\1/p' "$work/$name.out")"
    sim_broker="$(sed -n 's/^broker listening on tcp:\/\/\(.*\)$/\1/p' "$work/$name.out")"
    if [ -n "$sim_modbus" ] && { [ -n "$sim_broker" ] || [[ " $* " != *" --mqtt "* ]]; }; then
      return 0
    fi
    sleep 0.1
  done
  cat "$work/$name.log" >&2
  fail "$name: hearthsim did not start"
}

# write_config FILE GATEWAY BROKER MODBUS... writes an agent config with one
# device per Modbus address, polled at 1 Hz.
write_config() {
  local file="$1" gw="$2" broker="$3"; shift 3
  {
    echo "gateway_id: $gw"
    echo "data_dir: $work/$gw"
    echo "diag_socket: $work/$gw/hearth.sock"
    echo "devices:"
    local i=0
    for m in "$@"; do
      echo "  - name: battery$i"
      echo "    address: $m"
      echo "    poll_interval: 1s"
      echo "    timeout: 2s"
      i=$((i + 1))
    done
    echo "uplink:"
    echo "  broker: tcp://$broker"
    echo "  boot_delay: 0s"
    # The old JSON form, one reading a message, so that the check below can
    # read it with grep; the default (lean, batched, gzipped when it pays)
    # is pure Go and covered by the tests on the host.
    echo "  telemetry_format: json"
    echo "  telemetry_window: 0s"
  } >"$file"
  mkdir -p "$work/$gw"
}

want_version=""
[ -x "$dist/hearth-linux-amd64" ] && want_version="$("$dist/hearth-linux-amd64" version)"

check_target() {
  local t="$1" emu bin sim got
  emu="$(emulator "$t")"
  bin="$dist/hearth-linux-$t"
  sim="$dist/hearthsim-linux-$t"
  [ -f "$bin" ] || fail "$bin missing"
  got="$($emu "$bin" version)" || fail "$t: hearth version exited $?"
  # "hearth VERSION (built DATE)": release builds are stamped; an unstamped
  # one says "(build date unknown)", which fails here.
  [[ "$got" =~ ^hearth\ ([^[:space:]]+)(\ \(built\ [^\)]+\))?$ ]] || fail "$t: hearth version printed '$got'"
  local ver="${BASH_REMATCH[1]}"
  [ -z "$want_version" ] || [ "$got" = "$want_version" ] || fail "$t: '$got', amd64 says '$want_version'"
  if [ -f "$sim" ]; then
    local simv
    simv="$($emu "$sim" version)" || fail "$t: hearthsim version exited $?"
    [ "$simv" = "hearthsim $ver" ] || fail "$t: hearthsim version printed '$simv'"
  fi
  $emu "$bin" config check "$work/none.yaml" >/dev/null 2>&1 && fail "$t: config check of a missing file succeeded"

  start_sim "sim-$t" --modbus 127.0.0.1:0 --mqtt 127.0.0.1:0
  local simpid=$sim_pid
  local gw="selfcheck-$t" cfg="$work/selfcheck-$t.yaml" port="${sim_broker##*:}"
  write_config "$cfg" "$gw" "$sim_broker" "$sim_modbus"
  $emu "$bin" config check "$cfg" >/dev/null || fail "$t: config check rejected $cfg"

  mosquitto_sub -h 127.0.0.1 -p "$port" -i "selfcheck-sub-$t" -q 1 \
    -t "hearth/v1/$gw/telemetry" -C 3 -W 90 >"$work/telemetry-$t.txt" 2>"$work/sub-$t.log" &
  local sub=$!
  pids+=("$sub")
  sleep 0.5
  local start=$SECONDS
  $emu "$bin" run --config "$cfg" >"$work/agent-$t.log" 2>&1 &
  local agent=$!
  pids+=("$agent")
  if ! wait "$sub"; then
    tail -20 "$work/agent-$t.log" >&2
    fail "$t: fewer than 3 telemetry batches within 90 s"
  fi
  local n
  n="$(grep -c '"soc_pct":{"v":' "$work/telemetry-$t.txt" || true)"
  [ "$n" -ge 3 ] || { cat "$work/telemetry-$t.txt" >&2; fail "$t: $n of 3 batches carry a state of charge"; }
  local took=$((SECONDS - start))
  kill -TERM "$agent"
  local waited=0
  while kill -0 "$agent" 2>/dev/null; do
    sleep 0.5; waited=$((waited + 1))
    [ "$waited" -lt 30 ] || fail "$t: the agent did not stop within 15 s of SIGTERM"
  done
  local rc=0
  wait "$agent" || rc=$?
  [ "$rc" -eq 0 ] || { tail -20 "$work/agent-$t.log" >&2; fail "$t: the agent exited $rc on SIGTERM"; }
  kill "$simpid" 2>/dev/null || true
  printf 'selfcheck: ok  %-6s %-40s %s; 3 telemetry batches in %ss; clean stop\n' "$t" "${emu:-native}" "$got" "$took"
}

check_armv6_model() {
  local rc
  # The inner shell reports the signal on its own stderr, silenced here.
  rc="$( { qemu-arm-static -cpu arm1176 "$dist/hearth-linux-armv7" version >/dev/null 2>&1; echo $?; } 2>/dev/null)"
  [ "$rc" -eq 132 ] || fail "the armv7 binary under -cpu arm1176 exited $rc, want 132 (SIGILL): the CPU model proves nothing"
  echo "selfcheck: ok  the armv7 binary dies with SIGILL on the ARM1176 model, as it would on a Pi Zero"
}

# measure_rss runs the agent with two simulated devices at 1 Hz and samples
# the resident set of its process (under qemu-user: the emulator process,
# which includes the emulator's own code cache, an upper bound).
measure_rss() {
  local t="$1" emu bin
  emu="$(emulator "$t")"
  bin="$dist/hearth-linux-$t"
  start_sim "rss-a" --modbus 127.0.0.1:0 --mqtt 127.0.0.1:0 --serial RSS0001
  local broker="$sim_broker" m1="$sim_modbus"
  start_sim "rss-b" --modbus 127.0.0.1:0 --serial RSS0002
  local m2="$sim_modbus" cfg="$work/rss.yaml" gw="rss-$t"
  write_config "$cfg" "$gw" "$broker" "$m1" "$m2"
  mosquitto_sub -h 127.0.0.1 -p "${broker##*:}" -i rss-sub -q 1 -t "hearth/v1/$gw/telemetry" >"$work/rss-telemetry.txt" 2>/dev/null &
  pids+=("$!")
  # gctrace makes the Go runtime log its own heap at every collection: the
  # guest's figure, free of the emulator's overhead.
  GODEBUG=gctrace=1 $emu "$bin" run --config "$cfg" >"$work/rss-agent.log" 2>&1 &
  local agent=$!
  pids+=("$agent")
  local warm=30 samples=() s
  sleep "$warm"
  local end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    kill -0 "$agent" 2>/dev/null || { tail -20 "$work/rss-agent.log" >&2; fail "rss: the agent exited"; }
    s="$(awk '/^VmRSS:/ {print $2}' "/proc/$agent/status")"
    samples+=("$s")
    sleep 5
  done
  local hwm readings
  hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$agent/status")"
  readings="$(grep -o '"device":"battery[01]"' "$work/rss-telemetry.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
  [ -n "$readings" ] || fail "rss: no telemetry arrived"
  # "gc 12 @30.5s 0%: …, 4->4->2 MB, 5 MB goal, …": the live heap is the third figure.
  local heap
  heap="$(grep -o '[0-9]*->[0-9]*->[0-9]* MB, [0-9]* MB goal' "$work/rss-agent.log" | tail -1)"
  printf '%s\n' "${samples[@]}" | sort -n | awk -v t="$t" -v emu="${emu:-native}" -v hwm="$hwm" -v secs="$seconds" -v warm="$warm" -v r="$readings" -v heap="${heap:-none}" '
    { a[NR] = $1; sum += $1 }
    END { printf "rss %s (%s): after %d s warm-up, over %d s (%d samples): min %.1f MiB, median %.1f MiB, max %.1f MiB; peak (VmHWM) %.1f MiB; last Go GC heap (start->end->live, goal): %s; readings per device: %s\n",
          t, emu, warm, secs, NR, a[1]/1024, a[int((NR+1)/2)]/1024, a[NR]/1024, hwm/1024, heap, r }'
}

if [ -n "$rss_target" ]; then
  measure_rss "$rss_target"
  exit 0
fi
for t in "${targets[@]}"; do
  check_target "$t"
done
if [[ " ${targets[*]} " == *" armv6 "* && " ${targets[*]} " == *" armv7 "* ]]; then
  check_armv6_model
fi
echo "selfcheck: ${#targets[@]} passed, 0 failed"
