#!/usr/bin/env bash
# Installs the Debian packages that the tests, the demo and the benchmark use
# and a fresh Debian/Ubuntu machine lacks.  Does nothing when all are there.
set -euo pipefail
pkgs=(build-essential libssl-dev bison flex dpkg-dev file zip unzip ca-certificates
  postgresql postgresql-client clang libclang-rt-dev valgrind clang-format python3
  iproute2)
py=$(tools/python.sh)
"$py" -c 'import cryptography.hazmat.primitives.ciphers.aead as a; a.AESSIV' 2>/dev/null ||
  pkgs+=(python3-cryptography)
"$py" -c 'import yaml' 2>/dev/null || pkgs+=(python3-yaml)
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
