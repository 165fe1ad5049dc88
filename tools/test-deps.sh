#!/usr/bin/env bash
# Installs the Debian packages that building (tools/deps.sh), the tests, the
# demo and the benchmark use and a fresh Debian/Ubuntu machine lacks.  Does
# nothing when all are there.  This is the only script that installs packages:
# `make install-deps` runs it, and so do `make test` and `make demo` as their
# first step; build rules never install anything.
#
#   tools/test-deps.sh           build + tests (the default)
#   tools/test-deps.sh build     only what `make` and `make ARCH=...` need
set -euo pipefail
what=${1:-test}

# The build: compilers, the tools libpq's configure wants, OpenSSL's headers
# and static libraries, curl for the RDS CA bundle, and the cross toolchain for the other architecture
# (`make ARCH=arm64` on x86_64, `make ARCH=x86_64` on arm64).
pkgs=(build-essential pkg-config libssl-dev bison flex dpkg-dev file zip curl ca-certificates)
case $(uname -m) in
  x86_64) cross=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
  aarch64 | arm64) cross=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
  *) cross=() ;;
esac
pkgs+=("${cross[@]}")
if [[ $what == test ]]; then
  # The tests: a PostgreSQL server, the fuzzers' clang, valgrind, qemu-user
  # for the other architecture's binary, Python with an independent AES-SIV, and gdb,
  # which stops the bootstrap at each system call of its start-up to send it SIGTERM.
  pkgs+=(unzip postgresql postgresql-client clang libclang-rt-dev valgrind clang-format
    python3 qemu-user-static pgbouncer iproute2 gdb)
  py=$(tools/python.sh)
  "$py" -c 'import cryptography.hazmat.primitives.ciphers.aead as a; a.AESSIV' 2>/dev/null ||
    pkgs+=(python3-cryptography)
  "$py" -c 'import yaml' 2>/dev/null || pkgs+=(python3-yaml)
  "$py" -c 'import boto3' 2>/dev/null || pkgs+=(python3-boto3) # IAM tokens, LocalStack init
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "test-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
