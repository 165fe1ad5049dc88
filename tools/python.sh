#!/usr/bin/env bash
# Prints the Python interpreter the tests and tools use: the project's virtual
# environment, build/venv/bin/python (tools/venv.sh makes it, with the pinned
# packages of tools/requirements-*.txt), when it exists and runs; else the
# interpreter that venv is made from.  Prints nothing else; cannot fail.
#
#   tools/python.sh          the venv's interpreter, or the base one without a venv
#   tools/python.sh --base   the base one: the first python3 on PATH (on a
#                            fresh Debian, /usr/bin/python3), else /usr/bin/python3
cd "$(dirname "$0")/.."
if [[ ${1:-} != --base ]] && build/venv/bin/python -c '' >/dev/null 2>&1; then
  echo "$PWD/build/venv/bin/python"
  exit 0
fi
command -v python3 2>/dev/null || echo /usr/bin/python3
