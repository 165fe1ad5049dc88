#!/bin/sh
# version.sh - prints the release this source tree is, for the build
# (function/version.c), the zip's name and `make dist`:
#   - a git checkout whose top is this directory: `git describe --tags --dirty`
#     (v1.1.0 on a tagged commit, v1.1.0-3-g1a2b3c4 three commits later,
#     -dirty with uncommitted changes; an abbreviated commit id without tags);
#   - otherwise the VERSION file at the top (a source tarball, `make dist`);
#   - otherwise "unknown".
# A tree inside another repository's work tree (a release unpacked under
# build/) is not that repository's checkout: its VERSION file counts.
# Characters other than [A-Za-z0-9._+-] become "_" (the value goes into JSON
# and file names).
set -eu
cd "$(dirname "$0")/.."
v=
top=$(git rev-parse --show-toplevel 2>/dev/null || true)
if [ -n "$top" ] && [ "$top" -ef . ]; then
  v=$(git describe --tags --dirty --always --match 'v[0-9]*' 2>/dev/null || true)
fi
if [ -z "$v" ] && [ -f VERSION ]; then
  v=$(head -n 1 VERSION)
fi
[ -n "$v" ] || v=unknown
printf '%s\n' "$v" | tr -c 'A-Za-z0-9._+\n-' '_'
