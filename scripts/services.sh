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

# --- aarch64 cross compiler + arm64 Python headers: the aarch64 build check -------------------
# (tests/core/test_portability.py cross-compiles one kernel and reads its NEON loops). The full
# emulated aarch64 suite and its qemu are scripts/test_aarch64.sh, not the default test command.
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    _apt_install g++-aarch64-linux-gnu
  else
    echo "services.sh: aarch64-linux-gnu-g++ not found and apt-get is unavailable; the aarch64 build check will skip" >&2
  fi
fi
"$(dirname "$0")/aarch64_sysroot.sh" >/dev/null \
  || echo "services.sh: the arm64 sysroot could not be made; the aarch64 build check will skip" >&2

# --- openssl: the MQTT TLS test makes its own CA and broker certificate with it ---------------
# (mosquitto_passwd, for the password-file test, comes with the mosquitto package)
if ! command -v openssl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  _apt_install openssl
fi

# --- Aravis: GenICam camera stack and its fake GigE Vision camera (tests/cameras) -------------
# gir1.2-aravis-0.8 is the library + introspection data, aravis-tools has arv-fake-gv-camera-0.8;
# PyGObject (the Python side) is built into the venv against the system's gobject-introspection.
# PyGObject 3.51+ needs girepository-2.0 (GLib 2.80+); older systems (Debian 12) get 3.50.
if command -v apt-get >/dev/null 2>&1; then
  if ! command -v arv-fake-gv-camera-0.8 >/dev/null 2>&1; then
    for pkg in gir1.2-aravis-0.8 aravis-tools; do
      _apt_install "$pkg" || echo "services.sh: $pkg could not be installed; the Aravis camera tests will skip" >&2
    done
  fi
  if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import gi" >/dev/null 2>&1; then
    if ! pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null; then
      for pkg in pkg-config libgirepository1.0-dev libcairo2-dev; do
        _apt_install "$pkg" || echo "services.sh: $pkg could not be installed; PyGObject may not build" >&2
      done
    fi
    spec="PyGObject<3.51"
    if pkg-config --exists girepository-2.0 2>/dev/null; then spec="PyGObject"; fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$spec" \
      || echo "services.sh: PyGObject could not be built; the Aravis camera tests will skip" >&2
  fi
else
  echo "services.sh: apt-get is unavailable; install Aravis 0.8 (gir1.2-aravis-0.8, aravis-tools) and PyGObject for the Aravis camera tests, which skip meanwhile" >&2
fi

# --- Triton Inference Server for the serving tests (tests/export/test_triton_server.py) ----
# The tritonserver binary comes from the nvidia-pytriton wheel (python backend only). The wheel
# pins numpy<2, so it is installed without dependencies, and its python-backend stub runs the
# models in a side environment holding numpy 1.x whose .pth adds the main venv after it
# (see sdk/serving/local.py for why each piece is needed).
if [ -x .venv/bin/python ]; then
  if ! .venv/bin/python -c "import pytriton" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "nvidia-pytriton==0.7.0" \
      || echo "services.sh: nvidia-pytriton could not be installed; the Triton server test will skip" >&2
  fi
  tenv=.venv/pytriton-env
  tsite=$tenv/lib/$(.venv/bin/python -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages
  if [ ! -d "$tsite/numpy" ]; then
    base=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')
    { "$base/bin/python3" -m venv --without-pip "$tenv" \
        && .venv/bin/python -m pip install --quiet --disable-pip-version-check --target "$tsite" "numpy<2" 2>/dev/null; } \
      || echo "services.sh: the numpy<2 side environment for Triton could not be made; the Triton server test will skip" >&2
  fi
  if [ -d "$tsite" ]; then
    main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$(cd "$main_site" && pwd)')" > "$tsite/zz_edgesentry_main_venv.pth"
  fi
fi

# --- chromium + chromium-driver: the dashboard's headless-browser test (tests/dashboard) -------
# Debian's own browser and its matching driver, driven through selenium (requirements-dev.txt);
# nothing downloads a browser of its own.
if ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    _apt_install chromium || echo "services.sh: chromium could not be installed; the dashboard browser test will skip" >&2
    _apt_install chromium-driver \
      || echo "services.sh: chromium-driver could not be installed; the dashboard browser test will skip" >&2
  else
    echo "services.sh: chromedriver not found and apt-get is unavailable; the dashboard browser test will skip" >&2
  fi
fi
