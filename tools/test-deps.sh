#!/usr/bin/env bash
# Installs the Debian packages that a fresh Debian/Ubuntu machine lacks for one
# use of the repository.  Does nothing when all are there.  This is the only
# script that installs Debian packages: `make install-deps` runs it, and so do
# `make test` and `make demo` as their first step; build rules never install
# anything.  The Python packages Debian does not have come from a pinned
# requirement file into build/venv (the next step of those commands: venv.sh).
#
#   tools/test-deps.sh [test]     build, both architectures, and every test (the default)
#   tools/test-deps.sh demo       `make demo`: the native build, PostgreSQL, Python
#   tools/test-deps.sh build      only what `make` and `make ARCH=...` need
#   tools/test-deps.sh fresh-check  what `make fresh-check` needs on the host
#
# Not root: with sudo it installs through sudo; without, it stops at once and
# prints the command to run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

# The build of this machine's architecture: compilers, the tools libpq's
# configure wants, OpenSSL's headers and static libraries, curl for the RDS CA
# bundle; zlib's and zstd's static libraries, which Debian 13's static libcrypto
# needs (the Makefile asks pkg-config; Debian 12's needs neither).
native=(build-essential pkg-config libssl-dev zlib1g-dev libzstd-dev bison flex dpkg-dev file zip
  curl ca-certificates)
# The cross toolchain for the other architecture (`make ARCH=arm64` on x86_64,
# `make ARCH=x86_64` on arm64).
case $(uname -m) in
  x86_64) cross=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
  aarch64 | arm64) cross=(gcc-x86-64-linux-gnu libc6-dev-amd64-cross) ;;
  *) cross=() ;;
esac

# Python: the interpreter build/venv is made from (tools/python.sh --base), and
# the compiled modules the pinned packages use, from Debian, when that
# interpreter lacks them.  "module:package" pairs.
py_mods() {
  local py pair
  py=$(tools/python.sh --base)
  if ! command -v "$py" >/dev/null 2>&1; then
    pkgs+=(python3 python3-venv)
    py=
  fi
  for pair in "$@"; do
    if [[ -z $py ]] || ! "$py" -c "import ${pair%%:*}" >/dev/null 2>&1; then
      pkgs+=("${pair#*:}")
    fi
  done
}
# venv and ensurepip: Debian ships ensurepip apart, in python3-venv.
demo_mods=("venv, ensurepip:python3-venv"
  "cryptography.hazmat.primitives.ciphers.aead:python3-cryptography"
  "yaml:python3-yaml" "markupsafe:python3-markupsafe"
  "charset_normalizer:python3-charset-normalizer")
test_mods=("${demo_mods[@]}" "regex:python3-regex" "pydantic:python3-pydantic"
  "jsonschema:python3-jsonschema")

pkgs=()
case $what in
  build) pkgs=("${native[@]}" "${cross[@]}") ;;
  demo)
    # The demo: the native build, a PostgreSQL server and its psql, and Python
    # for the demo script, moto's SQS server and boto3.
    pkgs=("${native[@]}" postgresql postgresql-client)
    py_mods "${demo_mods[@]}"
    ;;
  test)
    # The tests: a PostgreSQL server, the fuzzers' clang, valgrind, qemu-user
    # for the other architecture's binary, pgbouncer, the aws CLI (the
    # LocalStack init hook), Python with an independent AES-SIV, and gdb, which
    # stops the bootstrap at each system call of its start-up to send it SIGTERM.
    pkgs=("${native[@]}" "${cross[@]}" unzip postgresql postgresql-client clang libclang-rt-dev
      valgrind clang-format qemu-user-static pgbouncer iproute2 gdb)
    command -v aws >/dev/null 2>&1 || pkgs+=(awscli)
    py_mods "${test_mods[@]}"
    ;;
  fresh-check) pkgs=(debootstrap git) ;;
  *) echo "test-deps: unknown set '$what' (test, demo, build, fresh-check)" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  # sudo when it can work: without a password, or asking on a terminal.
  if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
    sudo=(sudo)
  else
    echo "test-deps: missing Debian packages; run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi
echo "test-deps: installing ${missing[*]}" >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
