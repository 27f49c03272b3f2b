#!/usr/bin/env bash
# An aarch64 (arm64) root folder with Debian's Python 3.11, its headers and the C/C++ runtime
# libraries, for cross-building the CPU kernels and running them under qemu-aarch64.
#
#   scripts/aarch64_sysroot.sh [SYSROOT]          (default: .aarch64/sysroot)
#
# The packages come from the Debian release this machine runs, through a private apt state
# folder next to the sysroot (its own sources list and package lists, architecture arm64):
# the host's dpkg configuration is left alone (no `dpkg --add-architecture`), nothing is
# installed on the host, and it needs no root. Each .deb is unpacked with `dpkg-deb -x`.
# Idempotent: a finished sysroot is only re-checked (delete it to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
SYSROOT=${1:-.aarch64/sysroot}
APT_ROOT=$(dirname "$SYSROOT")/apt
STAMP=$SYSROOT/.edgesentry-sysroot

# The interpreter, its headers (libpython3.11-dev: Python.h and the arm64 pyconfig.h) and
# every shared library python3.11, numpy, scipy, onnxruntime and the kernels load.
PACKAGES=(
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libpython3.11-dev libpython3.11
  libc6 libc6-dev libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libgomp1
  libstdc++6 libgcc-s1 libncursesw6 libtinfo6 libreadline8 libuuid1 libdb5.3 libcrypt1 libnsl2
  libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1
  media-types
)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${PACKAGES[*]}" ] && [ -x "$SYSROOT/usr/bin/python3.11" ]; then
  exit 0
fi

. /etc/os-release
CODENAME=${DEBIAN_CODENAME:-${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release; set DEBIAN_CODENAME}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$APT_ROOT"/{lists/partial,cache/archives/partial,debs,empty} "$SYSROOT"
APT_ROOT=$(cd "$APT_ROOT" && pwd)
touch "$APT_ROOT/status"
cat > "$APT_ROOT/sources.list" <<EOF
deb [arch=arm64 signed-by=$KEYRING] $MIRROR $CODENAME main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR $CODENAME-updates main
deb [arch=arm64 signed-by=$KEYRING] $SECURITY $CODENAME-security main
EOF
APT_OPTS=(
  -o "Dir::State::Lists=$APT_ROOT/lists" -o "Dir::State::status=$APT_ROOT/status"
  -o "Dir::Cache=$APT_ROOT/cache" -o "Dir::Etc::SourceList=$APT_ROOT/sources.list"
  -o "Dir::Etc::SourceParts=$APT_ROOT/empty" -o "Dir::Etc::Preferences=$APT_ROOT/empty/preferences"
  -o "Dir::Etc::PreferencesParts=$APT_ROOT/empty"
  -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64" -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)"
)
if [ ! -f "$APT_ROOT/lists/.updated" ]; then
  apt-get "${APT_OPTS[@]}" -qq update
  touch "$APT_ROOT/lists/.updated"
fi
(cd "$APT_ROOT/debs" && apt-get "${APT_OPTS[@]}" -qq download "${PACKAGES[@]}")
for deb in "$APT_ROOT"/debs/*.deb; do
  dpkg-deb -x "$deb" "$SYSROOT"
done
# Debian's usrmerge layout: /lib and /lib64 are links into /usr; the loader path baked into
# aarch64 programs is /lib/ld-linux-aarch64.so.1.
for dir in lib lib64; do
  if [ ! -e "$SYSROOT/$dir" ] && [ -d "$SYSROOT/usr/$dir" ]; then ln -s "usr/$dir" "$SYSROOT/$dir"; fi
done
[ -x "$SYSROOT/usr/bin/python3.11" ] || { echo "aarch64_sysroot.sh: python3.11 missing after unpacking" >&2; exit 1; }
echo "${PACKAGES[*]}" > "$STAMP"
echo "aarch64 sysroot ready: $SYSROOT ($(du -sh "$SYSROOT" | cut -f1))"
