#!/usr/bin/env bash
# Builds the static libraries the release `bootstrap` links (libpq without
# GSSAPI/LDAP, libpgcommon, libpgport) and fetches cJSON from Debian's own source
# packages, and installs the Debian packages the build and tests need.
#
# Why from source: Debian's libpq.a is built --with-gssapi --with-ldap and
# Debian ships no static Kerberos, and libcjson-dev ships no libcjson.a.
# Why pinned: the sources of the security suite are not downloadable, so we
# take the versions of bookworm's main suite, recorded below.
#
# Usage: tools/deps.sh OUTDIR      (idempotent; a second run is a no-op)
# Result: OUTDIR/lib/{libpq,libpgcommon,libpgport}.a, OUTDIR/src/cJSON.c, OUTDIR/include
set -euo pipefail

out=${1:?usage: deps.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp="$out/.done-v2"
[[ -f $stamp ]] && exit 0

PG_VERSION=15.18-0+deb12u1
CJSON_VERSION=1.7.15-1+deb12u4

need_pkgs=(build-essential pkg-config libssl-dev bison flex dpkg-dev file zip ca-certificates)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A private apt configuration with a deb-src line, leaving the system's
# sources alone.  Use the machine's own mirror when it names one.
apt_dir="$out/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/src"
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | grep -v security | head -1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb-src ${mirror%/} bookworm main" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o APT::Sandbox::User=root)

cd "$apt_dir/src"
if ! ls postgresql-15_*.dsc cjson_*.dsc >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" update -qq
  apt-get "${apt_opts[@]}" source --download-only -qq \
    "postgresql-15=$PG_VERSION" "cjson=$CJSON_VERSION"
fi

# cJSON: one .c file, with Debian's security patches applied by dpkg-source.
rm -rf cjson
dpkg-source --no-check -x cjson_*.dsc cjson >/dev/null
# It is compiled by the Makefile with each build's flags (release, sanitizers,
# fuzzing), so the sources are what we keep.
mkdir -p "$out/lib" "$out/include" "$out/src"
cp cjson/cJSON.c "$out/src/"
cp cjson/cJSON.h "$out/include/"

# libpq: configured without everything that would pull in a library we do
# not ship.  Never `make install` here (Debian's patches redirect it).
rm -rf pg
dpkg-source --no-check -x postgresql-15_*.dsc pg >/dev/null
(
  cd pg
  ./configure -q --with-ssl=openssl --without-readline --without-zlib --without-icu \
    --without-gssapi --without-ldap --disable-nls CFLAGS="-O2" >/dev/null
  # The generated headers first (errcodes.h and friends): src/port and
  # src/common include them, and a parallel libpq build started without them
  # races their generation and fails on some machines.
  make -s -C src/backend generated-headers >/dev/null
  make -s -C src/port -j"$(nproc)" >/dev/null
  make -s -C src/common -j"$(nproc)" >/dev/null
  make -s -C src/interfaces/libpq -j"$(nproc)" all-static-lib >/dev/null
)
cp pg/src/interfaces/libpq/libpq.a pg/src/common/libpgcommon.a pg/src/port/libpgport.a "$out/lib/"
cp pg/src/interfaces/libpq/libpq-fe.h pg/src/include/postgres_ext.h pg/src/include/pg_config_ext.h "$out/include/"
rm -rf pg cjson
touch "$stamp"
echo "deps: static libraries ready in $out" >&2
