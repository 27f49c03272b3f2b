#!/usr/bin/env bash
# The aarch64 (Jetson CPU) side of edgesentry, built and tested on an x86-64 machine under
# user-mode emulation, plus the wheel checks. Not part of `pytest -q` / .ci/run: ~15-20 minutes
# on a 2-core machine (most of it qemu).
#
#   bash setup.sh && scripts/test_aarch64.sh [--skip-build]
#
# 1. Debian packages: qemu-user, g++-aarch64-linux-gnu (apt-get, when missing).
# 2. scripts/build_wheels.sh dist: the sdist, the x86-64 wheel and the cross-built aarch64
#    wheel (manylinux, auditwheel-repaired). --skip-build reuses dist/ when both wheels are there.
# 3. The machine code of the aarch64 kernels (scripts/aarch64_codegen.py --check): every hot
#    loop is NEON FMA code without register spills.
# 4. An aarch64 test environment (.aarch64/): Debian's arm64 Python 3.11 (scripts/aarch64_sysroot.sh)
#    with the aarch64 wheel unpacked and the aarch64 wheels of numpy, scipy, onnxruntime and
#    pytest from PyPI; `.aarch64/bin/python3.11` runs it under qemu-aarch64.
# 5. The kernel tests (rx, fers, isstad, mavd, otam) run by that interpreter: the cpu and
#    reference tiers against the reference and the oracles, same tests and tolerances as on
#    x86-64 (the triton and cuda tiers and torch-only tests skip: no torch, no GPU there).
# 6. The torch-free runtime test with the aarch64 interpreter: every family's bundle exported
#    here (torch, x86-64) and run through onnxruntime on aarch64, compared with torch.
# 7. Each wheel installed into a fresh environment without torch and a detection run
#    (scripts/check_wheel.py): x86-64 wheel with this machine's Python 3.11, the aarch64 wheel
#    under emulation, and the sdist built from source with Python 3.10 when one is installed.
#
# Logs go to .aarch64/logs/; the summary at the end gives pass counts and times.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VPY=$ROOT/.venv/bin/python
[ -x "$VPY" ] || { echo "test_aarch64.sh: run 'bash setup.sh' first" >&2; exit 1; }
A=$ROOT/.aarch64
SYSROOT=$A/sysroot
LOGS=$A/logs
mkdir -p "$LOGS"
SUMMARY=$LOGS/summary.txt
: > "$SUMMARY"
step() { echo "[$(date +%T)] $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }
T0=$(date +%s)

# ---- 1. Debian packages ------------------------------------------------------------------------
missing=()
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || missing+=(g++-aarch64-linux-gnu)
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$LOGS/apt.log"
fi
scripts/aarch64_sysroot.sh

# ---- 2. wheels --------------------------------------------------------------------------------
t=$(date +%s)
if [ "${1:-}" = "--skip-build" ] && ls dist/edgesentry-*aarch64.whl dist/edgesentry-*x86_64.whl >/dev/null 2>&1; then
  step "reusing dist/"
else
  step "building wheels (scripts/build_wheels.sh dist)"
  scripts/build_wheels.sh dist | tee "$LOGS/build_wheels.txt"
  sed -n '/summary/,$p' "$LOGS/build_wheels.txt" >> "$SUMMARY"
fi
WHL_X86=$(ls "$ROOT"/dist/edgesentry-*x86_64.whl)
WHL_ARM=$(ls "$ROOT"/dist/edgesentry-*aarch64.whl)
SDIST=$(ls "$ROOT"/dist/edgesentry-*.tar.gz)
note "wheels: $(elapsed "$t")"

# ---- 3. machine code of the aarch64 kernels ---------------------------------------------------------
rm -rf "$A/pkg" && mkdir -p "$A/pkg"
(cd "$A/pkg" && "$VPY" -m zipfile -e "$WHL_ARM" .)
step "aarch64 hot loops (scripts/aarch64_codegen.py)"
"$VPY" scripts/aarch64_codegen.py --check "$A"/pkg/edgesentry/kernels/_cpu_*.so | tee "$LOGS/codegen.txt"
cat "$LOGS/codegen.txt" >> "$SUMMARY"

# ---- 4. aarch64 test environment ----------------------------------------------------------------
# onnxruntime 1.27.0: the newest aarch64 wheel that imports under Debian 12's qemu 7.2 (1.28 and
# later stop with SIGSEGV while importing, in the emulator; real aarch64 CPUs run them).
ARM_PIP=(--disable-pip-version-check --only-binary=:all: --python-version 3.11
  --implementation cp --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64)
ARM_DEPS=(numpy scipy "onnxruntime==1.27.0" onnx safetensors pillow threadpoolctl)
if [ ! -f "$A/site/.done" ]; then
  step "aarch64 site-packages (PyPI)"
  rm -rf "$A/site"
  "$VPY" -m pip install --quiet --no-warn-conflicts "${ARM_PIP[@]}" --target "$A/site" "${ARM_DEPS[@]}" pytest
  touch "$A/site/.done"
fi
if [ ! -f "$A/wheelhouse/.done" ]; then
  step "aarch64 wheelhouse for the fresh-environment check (PyPI)"
  "$VPY" -m pip download --quiet "${ARM_PIP[@]}" -d "$A/wheelhouse" "${ARM_DEPS[@]}" pip
  touch "$A/wheelhouse/.done"
fi
mkdir -p "$A/bin"
cat > "$A/bin/python3.11" <<EOF
#!/bin/sh
# Debian's arm64 Python 3.11 under qemu-aarch64, with the aarch64 edgesentry wheel, numpy,
# onnxruntime and pytest (written by scripts/test_aarch64.sh).
exec $(command -v qemu-aarch64) -L "$SYSROOT" -E PYTHONPATH="$A/pkg:$A/site" "$SYSROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$A/bin/python3.11"
note "aarch64 interpreter: $("$A/bin/python3.11" -c 'import platform, numpy, onnxruntime; print(platform.machine(), platform.python_version(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)')"

# ---- 5. kernel tests under emulation ---------------------------------------------------------------
# Deselected: the triton and cuda tiers (no torch and no GPU on this interpreter; the cuda tier's
# CPU emulator compiles with the host's compiler), and two FERS reference tests that demand
# bit-exact float results across machines (they fail on some x86-64 CPUs too).
KERNEL_TESTS=(tests/rx/test_rx_kernels.py tests/fers/test_kernels.py tests/isstad/test_isstad_kernels.py
  tests/mavd/test_mavd_kernels.py tests/mdmf/test_otam_kernels.py)
SELECT="not triton and not cuda and not bit_exact and not full_path_and_invariant"
step "kernel tests on aarch64 (qemu)"
t=$(date +%s)
set +e
EDGESENTRY_SHARED=${EDGESENTRY_SHARED:-$ROOT/../shared} "$A/bin/python3.11" -m pytest -q -p no:cacheprovider \
  -k "$SELECT" "${KERNEL_TESTS[@]}" > "$LOGS/kernel_tests.log" 2>&1
rc_kernels=$?
set -e
note "kernel tests on aarch64: $(tail -1 "$LOGS/kernel_tests.log") ($(elapsed "$t"), -k \"$SELECT\")"

# ---- 6. torch-free runtime on aarch64 ------------------------------------------------------------
step "torch-free runtime test with the aarch64 interpreter"
t=$(date +%s)
set +e
EDGESENTRY_AARCH64_PYTHON="$A/bin/python3.11" "$VPY" -m pytest -q -p no:cacheprovider -rs \
  "tests/export/test_families.py::test_torch_free_runtime_runs_every_family" > "$LOGS/torch_free.log" 2>&1
rc_runtime=$?
set -e
note "torch-free runtime (native + aarch64): $(tail -1 "$LOGS/torch_free.log") ($(elapsed "$t"))"

# ---- 7. wheels in fresh environments --------------------------------------------------------------
step "exporting an ISSTAD bundle for the wheel checks"
BUNDLE=$A/bundle-isstad
rm -rf "$BUNDLE"
"$VPY" - "$BUNDLE" "${EDGESENTRY_SHARED:-$ROOT/../shared}" > "$LOGS/export_bundle.log" 2>&1 <<'EOF'
import sys
from pathlib import Path
import edgesentry
from edgesentry.export.onnx import export_bundle
out, ref = Path(sys.argv[1]), Path(sys.argv[2]) / "reference/isstad"
bundle = edgesentry.convert("isstad", ref / "tiny_stage2_seed0.pt", output=out, config=ref / "tiny_stage2_config.json")
assert all(export_bundle(bundle).values())
EOF
rc_wheels=0
check() {  # check NAME ARGS...
  local name=$1; shift
  step "fresh environment: $name"
  if "$VPY" scripts/check_wheel.py "$@" --bundle "$BUNDLE" > "$LOGS/wheel_$name.log" 2>&1; then
    note "wheel check $name: $(tail -1 "$LOGS/wheel_$name.log")"
  else
    rc_wheels=1
    note "wheel check $name FAILED: $(tail -3 "$LOGS/wheel_$name.log")"
  fi
}
check x86_64 "$WHL_X86" --python "$(command -v python3.11 || echo "$VPY")"
check aarch64 "$WHL_ARM" --sysroot "$SYSROOT" --find-links "$A/wheelhouse"
PY310=""
for py in "$HOME"/.pyenv/versions/3.10*/bin/python3.10 "$(command -v python3.10 || true)"; do
  if [ -n "$py" ] && "$py" -c "import sys; assert sys.version_info[:2] == (3, 10)" 2>/dev/null; then PY310=$py; break; fi
done
if [ -n "$PY310" ]; then
  check sdist-py310 "$SDIST" --python "$PY310"
else
  note "wheel check sdist-py310: skipped (no python3.10 on this machine)"
fi

note "total: $(elapsed "$T0")"
echo "---- summary ($SUMMARY)"; cat "$SUMMARY"
[ $rc_kernels = 0 ] && [ $rc_runtime = 0 ] && [ $rc_wheels = 0 ]
