"""The project's releases, and an earlier one built from its source for the test that runs
it and the current build on one database (tests/integration/test_releases.py).

    releases.known()          # {"v1.0.0": "<commit>", ...}: the table of docs/releases.md,
                              # checked against the git tags this clone has
    releases.previous()       # ("v1.0.0", "<commit>"): the newest release that is not HEAD
    releases.build(tag, commit)   # its static bootstrap, built once into build/releases/

A clone without tags still works: the table in docs/releases.md names each release's
commit. `git archive` of that commit is unpacked under build/releases/<tag>/, given a
VERSION file (what a source tarball has), and built with its own Makefile, reusing this
tree's static libraries (LOGIN_ETL_DEPS_ROOT) when they are the ones it expects, and
linking what this machine's static libcrypto.a needs when that Makefile predates the
question (_link_fix).
"""
import os
import re
import shutil
import subprocess

from . import paths

TABLE = paths.ROOT / "docs" / "releases.md"
_ROW = re.compile(r"^\| *(v\d+\.\d+\.\d+) *\| *`?([0-9a-f]{40})`? *\|", re.M)
_TAG = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
OUT = paths.BUILD / "releases"


def _git(*args, check=True):
    r = subprocess.run(["git", "-C", str(paths.ROOT), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r


def order(tag):
    return tuple(int(x) for x in _TAG.fullmatch(tag).groups())


def table():
    """The releases docs/releases.md lists: {tag: commit}."""
    rows = _ROW.findall(TABLE.read_text(encoding="utf-8"))
    out = dict(rows)
    assert len(out) == len(rows), f"{TABLE}: a release is listed twice"
    return out


def tags():
    """The release tags this clone has that HEAD contains: {tag: commit}."""
    r = _git("tag", "--list", "v*", "--merged", "HEAD", "--format=%(refname:short) %(*objectname) "
             "%(objectname)", check=False)
    out = {}
    for line in r.stdout.split("\n"):
        parts = line.split()
        if parts and _TAG.fullmatch(parts[0]):
            out[parts[0]] = parts[1] if len(parts) == 3 else parts[-1]  # annotated: the commit
    return out


def head():
    return _git("rev-parse", "HEAD").stdout.strip()


def known():
    """{tag: commit}: the table, which must agree with every tag HEAD contains (a tag on
    HEAD itself excepted: its row comes with the commit after it)."""
    listed = table()
    here = head()
    for tag, commit in tags().items():
        if commit == here and tag not in listed:
            continue
        assert listed.get(tag) == commit, (
            f"docs/releases.md lists {tag} at {listed.get(tag)}, the tag is at {commit}")
    return listed


def previous():
    """The newest release whose commit is not HEAD's: (tag, commit)."""
    here = head()
    candidates = sorted(((t, c) for t, c in known().items() if c != here),
                        key=lambda tc: order(tc[0]))
    assert candidates, "docs/releases.md lists no release before this one"
    return candidates[-1]


def build(tag, commit):
    """The path of that release's static bootstrap, built on first use and kept under
    build/releases/<tag>/ (keyed by its commit)."""
    where = OUT / tag
    binary = where / "build" / "bootstrap"
    stamp = where / ".commit"
    if binary.exists() and stamp.exists() and stamp.read_text() == commit:
        return binary
    if _git("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        raise AssertionError(f"{tag}'s commit {commit} is not in this clone: "
                             "`git fetch --tags --unshallow` brings it")
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(paths.ROOT), "archive", commit],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(where)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    assert archive.wait() == 0, f"git archive {commit} failed"
    (where / "VERSION").write_text(tag + "\n")
    env = dict(os.environ)
    env.pop("LOGIN_ETL_ARCH", None)
    # Its static libraries: this tree's when they carry the mark its Makefile waits for,
    # else it builds its own (minutes, once).
    mark = re.search(r"^DEPS_OK\s*:=\s*\$\(DEPS\)/(\S+)", (where / "Makefile").read_text(), re.M)
    if mark and (paths.BUILD / "deps" / mark.group(1)).exists():
        env["LOGIN_ETL_DEPS_ROOT"] = str(paths.BUILD)
    r = subprocess.run(["make", "--no-print-directory", "-j2", "-C", str(where), "build/bootstrap",
                        *_link_fix(where / "Makefile")], env=env, capture_output=True, text=True,
                       timeout=3600)
    if r.returncode != 0:
        raise AssertionError(f"building {tag} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    stamp.write_text(commit)
    return binary


def _link_fix(makefile):
    """make arguments that let an older Makefile link on this machine: one written before
    the Makefile asked pkg-config what the static libcrypto.a needs besides (Debian 13's
    needs zlib and zstd, Debian 12's nothing) gets those libraries after its own LIBS."""
    text = makefile.read_text()
    libs = re.search(r"^LIBS\s*:=\s*(.*\S)\s*$", text, re.M)
    if not libs or "SSL_PRIVATE" in text:
        return []
    r = subprocess.run(["pkg-config", "--static", "--libs", "libcrypto"], capture_output=True,
                       text=True)
    extra = [f for f in r.stdout.split() if f.startswith("-l") and f not in ("-lcrypto", "-lssl")]
    return [f"LIBS={libs.group(1)} {' '.join(extra)}"] if extra and r.returncode == 0 else []

