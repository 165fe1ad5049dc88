#!/usr/bin/env bash
# The build image's recipe: what tools/build-image/Dockerfile RUNs to make a
# Debian bookworm image in which `sam build --use-container` (or plain `make`)
# builds bootstrap for x86_64 and arm64.  CI runs the same script on its Debian
# machine (.ci/run), so the recipe is tested where Docker is not available.
#
#   tools/build-image/setup.sh DEPS_ROOT
#
# 1. the Debian packages of the build, the cross toolchain included
#    (tools/test-deps.sh build);
# 2. the static libraries for this machine's architecture into DEPS_ROOT/deps,
#    and for the other one into DEPS_ROOT/<arch>/deps (tools/deps.sh), where the
#    Makefile finds them when LOGIN_ETL_DEPS_ROOT=DEPS_ROOT (DEPS_ROOT=build is
#    the Makefile's own default place).
# Idempotent: what is already there is not done again.
set -euo pipefail
root=${1:?usage: setup.sh DEPS_ROOT}
cd "$(dirname "$0")/../.."
mkdir -p "$root"
root=$(cd "$root" && pwd)

case $(uname -m) in
  x86_64) other=arm64 ;;
  aarch64 | arm64) other=x86_64 ;;
  *) echo "setup: $(uname -m) is neither x86_64 nor arm64" >&2; exit 1 ;;
esac

t0=$(date +%s)
tools/test-deps.sh build
tools/deps.sh "$root/deps"
t1=$(date +%s)
tools/deps.sh "$root/$other/deps" "$other"
t2=$(date +%s)
echo "setup: packages and $(uname -m) libraries $((t1 - t0)) s, $other libraries $((t2 - t1)) s; in $root" >&2
