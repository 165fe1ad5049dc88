#!/usr/bin/env bash
# The README's promise, checked as a new user meets it: in a fresh minimal
# Debian (debootstrap --variant=minbase, then only git, ca-certificates and make
# installed), as root, the committed HEAD cloned into /root/login-etl-check,
# `make demo` ends "demo: OK" and `make test` ends "N passed, 0 failed".
#
#   tools/fresh-check.sh [SUITE[:part]...]   (root; default: bookworm trixie)
#   make fresh-check [FRESH_SUITES=...]
#
# SUITE:part runs `make demo` and then `make test` with only the tests that a
# fresh machine is apt to break where this machine's own run cannot see it
# (PART below: the Python packages from the wheels and Debian's compiled ones,
# the aws CLI, a system without procps, the clone in /root and a server run as
# the postgres user); the C toolchain, and with it the unit tests, fuzzers
# and valgrind runs, is the suite's own but the same as in its full run.  CI
# runs one suite in full and the other in part (.ci/run).
#
# For each suite: a chroot in build/fresh/SUITE/root, made anew from a cached
# debootstrap tarball (build/fresh/cache/SUITE-minbase.tgz, downloaded once
# from the machine's Debian mirror); /proc, /sys, /dev, /dev/pts and a private
# /dev/shm mounted (PostgreSQL needs them), the host's resolv.conf copied, and
# apt's downloaded packages kept in build/fresh/cache/SUITE-archives (mounted on
# /var/cache/apt/archives) so a second run downloads nothing again.  As in
# Debian's container images, installed services are not started
# (/usr/sbin/policy-rc.d).  The Python packages of tools/requirements-*.txt
# come from a folder of wheels rebuilt from this machine's Python
# (tools/wheelhouse.py), through the same pip command a user runs, with
# PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheelhouse: the package index is not
# reachable from the machines that run this check.
#
# Prints, per suite, each command's time and result line, and keeps the full
# output in build/fresh/SUITE/{setup,demo,test}.log.  Exits non-zero when a
# command failed.  Whatever happens (Ctrl-C too), the processes left in a
# chroot (the demo's database) are killed and everything mounted is unmounted.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
if [[ $(id -u) -ne 0 ]]; then
  echo "fresh-check: needs root (debootstrap, chroot, mount): sudo tools/fresh-check.sh $*" >&2
  exit 1
fi
suites=("$@")
((${#suites[@]})) || suites=(bookworm trixie)
PART=(test_demo test_template test_localstack_init test_local_runner test_rds_iam
  test_mask_crosscheck test_rig test_deploy_sql test_etl)
part_args="--only integration$(printf ' -k %s.' "${PART[@]}")"
work=$repo/build/fresh
mkdir -p "$work/cache"
tools/test-deps.sh fresh-check

mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | grep -v security | head -1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

# The commit under test, as a bundle the chroot clones from.
[[ -z $(git status --porcelain --untracked-files=no) ]] ||
  echo "fresh-check: the work tree has uncommitted changes; checking the committed HEAD $(git rev-parse --short HEAD)" >&2
git bundle create -q "$work/head.bundle" HEAD
# The pinned Python packages, rebuilt from this machine's Python.
rm -rf "$work/wheelhouse"
"$(tools/python.sh --base)" tools/wheelhouse.py "$work/wheelhouse" tools/requirements-test.txt 2>"$work/wheelhouse.log" ||
  { cat "$work/wheelhouse.log" >&2; exit 1; }

mounted=()
root=
cleanup() {
  local i pid link
  if [[ -n $root && -d $root ]]; then
    # Every process whose root directory is the chroot: started by this check.
    for _ in 1 2 3; do
      local left=()
      for pid in /proc/[0-9]*; do
        link=$(readlink "$pid/root" 2>/dev/null) || continue
        [[ $link == "$root" ]] && left+=("${pid#/proc/}")
      done
      ((${#left[@]})) || break
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 1
    done
  fi
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
  done
  mounted=()
}
trap cleanup EXIT
trap 'echo "fresh-check: interrupted" >&2; exit 130' INT TERM

mnt() { # mnt TARGET ARGS...: mount, and remember to unmount
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

# in_chroot LOG COMMAND: runs a bash command in the chroot as root with the
# environment of a fresh login (no variables of this machine), output to LOG.
in_chroot() {
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheelhouse \
    /bin/bash -c "$2" >"$1" 2>&1 </dev/null
}

fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

status=0
summary=()
for spec in "${suites[@]}"; do
  suite=${spec%%:*}
  test_cmd="make test"
  [[ $spec == *:part ]] && test_cmd="make test TEST_ARGS='$part_args'"
  case $suite in
    bookworm) name="Debian 12 (bookworm)" ;;
    trixie) name="Debian 13 (trixie)" ;;
    *) name="Debian $suite" ;;
  esac
  dir=$work/$suite
  tarball=$work/cache/$suite-minbase.tgz
  archives=$work/cache/$suite-archives
  if [[ ! -f $tarball ]]; then
    echo "fresh-check: $suite: downloading the minimal system (once, into $tarball)" >&2
    rm -rf "$work/mk-$suite"
    debootstrap --variant=minbase --make-tarball="$tarball.tmp" "$suite" "$work/mk-$suite" "$mirror" \
      >"$work/mk-$suite.log" 2>&1 || { tail -5 "$work/mk-$suite.log" >&2; exit 1; }
    mv "$tarball.tmp" "$tarball"
    rm -rf "$work/mk-$suite"
  fi
  root=$dir/root
  rm -rf "$root"
  mkdir -p "$root" "$archives/partial"
  root=$(cd "$root" && pwd -P)
  t0=$(date +%s)
  debootstrap --variant=minbase --unpack-tarball="$tarball" "$suite" "$root" "$mirror" \
    >"$dir/setup.log" 2>&1 || { tail -5 "$dir/setup.log" >&2; exit 1; }
  mnt "$root/proc" -t proc proc
  mnt "$root/sys" -t sysfs sysfs
  mnt "$root/dev" --bind /dev
  mnt "$root/dev/pts" --bind /dev/pts
  mnt "$root/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev shm
  mnt "$root/var/cache/apt/archives" --bind "$archives"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cp "$work/head.bundle" "$root/tmp/head.bundle"
  cp -r "$work/wheelhouse" "$root/opt/wheelhouse"
  if ! in_chroot "$dir/setup.log" 'set -e
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git ca-certificates make >/dev/null
      git -c advice.detachedHead=false clone -q /tmp/head.bundle /root/login-etl-check
      rm /tmp/head.bundle'; then
    tail -5 "$dir/setup.log" >&2
    summary+=("$name: setup FAILED (build/fresh/$suite/setup.log)")
    status=1
    cleanup
    continue
  fi
  t1=$(date +%s)
  line="$name: system $(fmt $((t1 - t0)))"
  for cmd in demo test; do
    echo "fresh-check: $suite: make $cmd (build/fresh/$suite/$cmd.log)" >&2
    s=$(date +%s)
    rc=0
    run="make $cmd"
    [[ $cmd == test ]] && run=$test_cmd
    in_chroot "$dir/$cmd.log" "cd /root/login-etl-check && $run" || rc=$?
    e=$(date +%s)
    if [[ $cmd == demo ]]; then
      result=$(grep -E '^demo: ' "$dir/$cmd.log" | tail -1 || true)
    else
      result=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$dir/$cmd.log" | tail -1 || true)
    fi
    [[ -n $result ]] || result="no result line: $(tail -1 "$dir/$cmd.log")"
    if ((rc != 0)); then
      status=1
      result="$result (exit $rc)"
    fi
    [[ $cmd == test && $spec == *:part ]] && result+=" (part: ${#PART[@]} modules)"
    line+="; make $cmd $(fmt $((e - s))) $result"
  done
  summary+=("$line")
  echo "fresh-check: $line" >&2
  cleanup
done
echo
for l in "${summary[@]}"; do echo "fresh-check: $l"; done
exit $status
