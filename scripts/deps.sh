#!/usr/bin/env bash
# Installs what hearth's tests need on a Debian machine, when it is missing:
# mosquitto (the real broker the tests start on free ports), nats-server
# (a second broker, run alone and as a 3-node cluster with MQTT) and socat
# (pseudo-terminal pairs for RTU tests), and Debian's pymodbus with its
# serial modules (an independent Modbus stack), and Debian's Chromium (the
# headless browser the local page's test drives), groff and zsh (the manual
# page and completion checks). Run as root or with sudo.
# `deps.sh rabbitmq` also installs rabbitmq-server (for `make rabbitmq`)
# without starting the machine's own node: the tests run nodes of their own.
set -euo pipefail
need=()
rabbit=""
if [ "${1:-}" = rabbitmq ] && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  need+=(rabbitmq-server)
  rabbit=1
fi
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# Debian's pymodbus only recommends the serial modules its server imports.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import pymodbus, serial, serial_asyncio" 2>/dev/null ||
  need+=(python3 python3-pymodbus python3-serial python3-serial-asyncio)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
# The completion test checks the manual page with groff and the zsh script with zsh -n.
command -v groff >/dev/null 2>&1 || need+=(groff-base)
command -v zsh >/dev/null 2>&1 || need+=(zsh)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${need[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# Another apt (an unattended upgrade) may hold the dpkg lock: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
if [ -n "$rabbit" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  # Debian's policy hook: no service is started while installing, so the
  # package does not boot a system RabbitMQ node nobody asked for.
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}"
