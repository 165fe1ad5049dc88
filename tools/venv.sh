#!/usr/bin/env bash
# Makes the project's virtual environment, build/venv, with the pinned Python
# packages Debian does not ship (moto's server, boto3, cfn-lint with the SAM
# translator), and checks that everything they import is there.
#
#   tools/venv.sh demo    tools/requirements-demo.txt (`make demo`)
#   tools/venv.sh [test]  tools/requirements-test.txt (`make test`; holds the demo's)
#
# The venv is made from tools/python.sh --base with --system-site-packages, so
# the machine's own packages are used where they meet the pins (pip skips a pin
# that is installed at that version) and Debian's compiled ones (cryptography,
# yaml, pydantic...: tools/test-deps.sh) are seen.  pip installs with
# --no-deps: the requirement files list every distribution it brings.  It asks
# the package index, or a local folder with PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR
# (tools/wheelhouse.py makes one; tools/fresh-check.sh uses it).  When pip
# cannot get a pin, it stops with one line naming it.  Done once per content
# of the requirement files (a stamp in build/venv).  docs/fresh-machines.md.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}
case $what in
  demo) check='import moto.server, boto3, flask_cors, yaml, cryptography' ;;
  test) check='import moto.server, boto3, flask_cors, yaml, cryptography, cfnlint.api, samtranslator.translator.transform' ;;
  *) echo "venv: unknown set '$what' (demo, test)" >&2; exit 2 ;;
esac
req=tools/requirements-$what.txt
venv=build/venv
sum=$(cat tools/requirements-*.txt | sha256sum | cut -c1-16)
stamp=$venv/.done-$what-$sum
[[ -f $stamp ]] && "$venv/bin/python" -c '' >/dev/null 2>&1 && exit 0

base=$(tools/python.sh --base)
if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf "$venv"
  mkdir -p build
  if ! "$base" -m venv --system-site-packages "$venv" >build/venv.log 2>&1; then
    echo "venv: $base cannot make a virtual environment ($(tail -1 build/venv.log)); on Debian: apt-get install python3-venv (make install-deps)" >&2
    rm -rf "$venv"
    exit 1
  fi
fi
log=$venv/pip.log
if ! "$venv/bin/python" -m pip install --no-deps --no-input --disable-pip-version-check \
  -r "$req" >"$log" 2>&1; then
  pin=$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' "$log" | head -1)
  echo "venv: pip cannot get ${pin:-the pins of $req} (is the package index, PyPI, reachable? pip's words: $log); with network: tools/venv.sh $what; offline: docs/fresh-machines.md" >&2
  exit 1
fi
# What the pinned packages import from outside the list (Debian's compiled
# packages) must be there too.
if ! err=$("$venv/bin/python" -W ignore -c "$check" 2>&1); then
  echo "venv: the packages of $req do not import: $(echo "$err" | tail -1) (the Debian packages: tools/test-deps.sh $what)" >&2
  exit 1
fi
rm -f "$venv"/.done-"$what"-*
touch "$stamp"
