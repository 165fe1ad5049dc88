#!/usr/bin/env bash
# Builds the static libraries the release `bootstrap` links (libpq without
# GSSAPI/LDAP, libpgcommon, libpgport) and fetches cJSON from Debian's own source
# packages.  It installs nothing: the Debian packages it needs come from
# tools/test-deps.sh (`make install-deps`), and it stops naming them when missing.
#
# Why from source: Debian's libpq.a is built --with-gssapi --with-ldap and
# Debian ships no static Kerberos, and libcjson-dev ships no libcjson.a.
# Why pinned: the sources of the security suite are not downloadable, so we
# take the versions of bookworm's main suite, recorded below.
#
# Usage: tools/deps.sh OUTDIR [ARCH]   (idempotent; a second run is a no-op)
# Result: OUTDIR/lib/{libpq,libpgcommon,libpgport}.a, OUTDIR/src/cJSON.c, OUTDIR/include
#
# ARCH (x86_64 or arm64; default: this machine's) other than this machine's is a
# cross build with Debian's cross toolchain (gcc-aarch64-linux-gnu or
# gcc-x86-64-linux-gnu): libpq is configured --host for it, and OpenSSL's static
# libraries and headers for it come from Debian's own binary package libssl-dev
# of that architecture (bookworm-security's current version, downloaded and
# unpacked into OUTDIR; the machine's dpkg architectures are left alone), so
# OUTDIR/lib also holds libssl.a and libcrypto.a and OUTDIR/include/openssl.
set -euo pipefail

out=${1:?usage: deps.sh OUTDIR [ARCH]}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp="$out/.done-v2"
[[ -f $stamp ]] && exit 0

PG_VERSION=15.18-0+deb12u1
CJSON_VERSION=1.7.15-1+deb12u4

norm_arch() {
  case $1 in
    x86_64 | amd64) echo x86_64 ;;
    arm64 | aarch64) echo arm64 ;;
    *) echo "deps: unknown architecture $1 (x86_64 or arm64)" >&2; return 1 ;;
  esac
}
host_arch=$(norm_arch "$(uname -m)")
arch=$(norm_arch "${2:-$host_arch}")
cross=
if [[ $arch != "$host_arch" ]]; then
  case $arch in
    arm64) cross=aarch64-linux-gnu deb_arch=arm64 cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    x86_64) cross=x86_64-linux-gnu deb_arch=amd64 cross_pkgs=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
  esac
fi

need_pkgs=(build-essential pkg-config libssl-dev zlib1g-dev libzstd-dev bison flex dpkg-dev file zip
  ca-certificates)
[[ -n $cross ]] && need_pkgs+=("${cross_pkgs[@]}")
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Installing is tools/test-deps.sh's job (`make install-deps`, and the first
# step of `make test` and `make demo`): a build step only says what is missing.
if ((${#missing[@]})); then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: install them with \`make install-deps\` (tools/test-deps.sh, as root)" >&2
  exit 1
fi

# A private apt configuration with a deb-src line, leaving the system's
# sources and caches alone (a user other than root cannot write the caches).
# Use the machine's own mirror when it names one.
apt_dir="$out/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$apt_dir/src"
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | grep -v security | head -1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb-src ${mirror%/} bookworm main" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)

cd "$apt_dir/src"
# A native build next door already downloaded the same pinned sources.
if [[ -n $cross ]] && ! ls postgresql-15_*.dsc >/dev/null 2>&1 && [[ -f $out/../deps/.done-v2 ]]; then
  cp "$out"/../deps/apt/src/{postgresql-15_,cjson_}* . 2>/dev/null || true
fi
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

# OpenSSL for a cross build: Debian's libssl-dev of the target architecture,
# through a private apt configuration of that architecture only.
cross_env=()
if [[ -n $cross ]]; then
  ssl_dir="$out/openssl"
  rm -rf "$ssl_dir" && mkdir -p "$ssl_dir/lists/partial" "$ssl_dir/cache/archives/partial" "$ssl_dir/root"
  {
    echo "deb [arch=$deb_arch] ${mirror%/} bookworm main"
    echo "deb [arch=$deb_arch] ${mirror%/}-security bookworm-security main"
  } >"$ssl_dir/sources.list"
  ssl_opts=(-o "Dir::Etc::SourceList=$ssl_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$ssl_dir/lists" -o "Dir::Cache=$ssl_dir/cache" -o Dir::State::status=/dev/null
    -o "APT::Architecture=$deb_arch" -o "APT::Architectures::=$deb_arch" -o APT::Sandbox::User=root)
  apt-get "${ssl_opts[@]}" update -qq
  (cd "$ssl_dir" && apt-get "${ssl_opts[@]}" download -qq "libssl-dev:$deb_arch")
  dpkg-deb -x "$ssl_dir"/libssl-dev_*.deb "$ssl_dir/root"
  multi="$ssl_dir/root/usr/lib/$cross"
  inc="$ssl_dir/root/usr/include"
  mkdir -p "$out/lib" "$out/include/openssl"
  cp "$multi/libssl.a" "$multi/libcrypto.a" "$out/lib/"
  cp "$inc"/openssl/*.h "$inc/$cross"/openssl/*.h "$out/include/openssl/"
  dpkg-deb -f "$ssl_dir"/libssl-dev_*.deb Version >"$out/openssl-version"
  echo "deps: OpenSSL $(cat "$out/openssl-version") for $arch" >&2
  rm -rf "$ssl_dir"
  # Every tool named for the target, so configure never falls back to the build
  # machine's: CXX too, though no C++ is compiled (LLVM is off) and Debian's
  # cross g++ is not needed; and no pkg-config, whose .pc files here describe
  # the build machine's own libraries.
  cross_env=(--host="$cross" CC="$cross-gcc" CXX="$cross-gcc" AR="$cross-ar"
    RANLIB="$cross-ranlib" STRIP="$cross-strip" PKG_CONFIG=false
    CPPFLAGS="-I$out/include" LDFLAGS="-L$out/lib")
fi

# libpq: configured without everything that would pull in a library we do
# not ship.  Never `make install` here (Debian's patches redirect it).
rm -rf pg
dpkg-source --no-check -x postgresql-15_*.dsc pg >/dev/null
(
  cd pg
  ./configure -q --with-ssl=openssl --without-readline --without-zlib --without-icu \
    --without-gssapi --without-ldap --disable-nls CFLAGS="-O2" "${cross_env[@]}" >/dev/null
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
