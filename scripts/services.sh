#!/usr/bin/env bash
# Local services the test suite talks to on loopback. Idempotent: a second run only re-checks.
# Each block installs one Debian package when its binary is missing; `apt-get update` runs only
# when the package index does not know the package yet. Nothing is started here: tests start
# their own instances on free loopback ports and stop them afterwards.
set -euo pipefail

_apt_install() {  # _apt_install PACKAGE
  local pkg=$1 sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
      echo "services.sh: $pkg is missing and this user cannot install packages (not root, no sudo); tests that need it will skip" >&2
      return 0
    fi
  fi
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    $sudo apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

# --- mosquitto: MQTT broker for the stream runtime's MQTT sink tests (tests/stream) ---------
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if command -v apt-get >/dev/null 2>&1; then
    _apt_install mosquitto
  else
    echo "services.sh: mosquitto not found and apt-get is unavailable; MQTT tests will skip" >&2
  fi
fi
