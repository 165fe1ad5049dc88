#!/usr/bin/env python3
"""Rebuilds wheels from the distributions installed in this Python, for pip to
install from a local folder when the package index cannot be reached.

    tools/wheelhouse.py OUTDIR tools/requirements-test.txt [more requirement files]

Every `name==version` line of the requirement files (and of the files they pull
in with `-r`) must be installed here at exactly that version.  An installed
distribution is a wheel unpacked: its files under site-packages plus its
.dist-info directory.  The wheel made of it holds those files as RECORD lists
them, each checked against RECORD's hash first (a file changed after install
is refused), the dist-info without what the installer added (INSTALLER,
REQUESTED, direct_url.json), and a new RECORD with the hashes of what the wheel
holds.  Console scripts are not copied: pip writes them again from
entry_points.txt.  Only pure-Python wheels are made: a compiled distribution
fits only the interpreter it was built for, and the project takes those from
Debian (tools/test-deps.sh), so one named in a requirement file is an error.

Then, offline, the very command a user runs against the index installs them:

    PIP_NO_INDEX=1 PIP_FIND_LINKS=OUTDIR build/venv/bin/pip install --no-deps -r ...

tools/fresh-check.sh does this for its Debian chroots.  Exit status 0 when every
pinned distribution became a wheel; otherwise one line per problem and 1.
"""
import base64
import csv
import hashlib
import importlib.metadata as md
import io
import os
import re
import sys
import zipfile
from pathlib import Path

# What an installer adds to a dist-info directory; a wheel does not carry it.
INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
# Fixed timestamps, so the same distribution always gives the same bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def pins(path, seen=None):
    """The (name, version) pairs of a requirement file and those it includes."""
    seen = seen if seen is not None else set()
    path = Path(path).resolve()
    if path in seen:
        return []
    seen.add(path)
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out += pins(path.parent / line[3:].strip(), seen)
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not m:
            raise ValueError(f"{path}: not an exact pin: {raw!r}")
        out.append((m.group(1), m.group(2)))
    return out


def record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def original(data, digest, size, what):
    """The bytes a wheel had for an installed file: the file itself when it matches
    its RECORD hash, or its first `size` bytes when only those match (something
    appended to it after install, as a CA bundle extended on the machine).
    Otherwise the file was changed and is refused."""
    if not digest or record_hash(data) == digest:
        return data
    if size.isdigit() and int(size) < len(data) and record_hash(data[:int(size)]) == digest:
        print(f"wheelhouse: {what}: {len(data) - int(size)} bytes appended after install "
              "are left out (the start matches RECORD)", file=sys.stderr)
        return data[:int(size)]
    raise ValueError(f"{what} differs from its RECORD (changed after install)")


def wheel_name(dist_info_dir, wheel_text):
    """The wheel's file name from the dist-info directory name and WHEEL's tags."""
    name_ver = dist_info_dir.removesuffix(".dist-info")
    tags = [l.split(":", 1)[1].strip() for l in wheel_text.splitlines() if l.startswith("Tag:")]
    if not tags:
        raise ValueError(f"{dist_info_dir}/WHEEL names no tag")
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    return f"{name_ver}-{'.'.join(parts[0])}-{'.'.join(parts[1])}-{'.'.join(parts[2])}.whl"


def build(name, version, outdir):
    """Writes the wheel of one installed distribution into outdir; returns its path."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise ValueError(f"{name}=={version} is not installed in {sys.executable}")
    if dist.version != version:
        raise ValueError(f"{name}=={version} is pinned, {sys.executable} has {dist.version}")
    info = Path(dist._path)  # the .dist-info directory
    site = info.parent
    wheel_text = (info / "WHEEL").read_text()
    if "Root-Is-Purelib: true" not in wheel_text:
        raise ValueError(f"{name}=={version} is compiled for this interpreter: take it from "
                         "Debian (tools/test-deps.sh), not from a requirement file")
    scripts = set()
    if (info / "entry_points.txt").exists():
        for ep in dist.entry_points:
            if ep.group in ("console_scripts", "gui_scripts"):
                scripts.add(ep.name)
    rows = list(csv.reader(io.StringIO((info / "RECORD").read_text())))
    prefix = Path(sys.prefix).resolve()
    files = []
    for row in rows:
        rel, digest, size = (row + ["", ""])[:3]
        parts = Path(rel).parts
        if "__pycache__" in parts or (parts[0] == info.name and parts[-1] in INSTALLER_FILES):
            continue
        data = original((site / rel).read_bytes(), digest, size, f"{name}: {rel}")
        if parts[-1].endswith((".so", ".pyd")):
            raise ValueError(f"{name}=={version} holds compiled code ({rel})")
        if rel.startswith(".."):
            # Outside site-packages: a script or a data file, the wheel's
            # NAME-VERSION.data/scripts/ and .data/data/ (relative to the prefix).
            where = (site / rel).resolve().relative_to(prefix)
            if where.parts[0] == "bin" and len(where.parts) == 2:
                if where.name in scripts:
                    continue  # a console script: pip writes it again
                # A plain script: its "#!" line back to the "#!python" pip rewrites.
                if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
                    data = b"#!python\n" + data.split(b"\n", 1)[1]
                rel = f"{info.name.removesuffix('.dist-info')}.data/scripts/{where.name}"
            else:
                rel = f"{info.name.removesuffix('.dist-info')}.data/data/{where.as_posix()}"
        files.append((rel, data))
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / wheel_name(info.name, wheel_text)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        # The dist-info last, as wheels have it (pip reads it from the end).
        for rel, data in sorted(files, key=lambda f: (f[0].startswith(info.name + "/"), f[0])):
            zi = zipfile.ZipInfo(rel, ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data)
            writer.writerow([rel, record_hash(data), len(data)])
        writer.writerow([f"{info.name}/RECORD", "", ""])
        zi = zipfile.ZipInfo(f"{info.name}/RECORD", ZIP_TIME)
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = 0o644 << 16
        z.writestr(zi, record.getvalue())
    os.replace(tmp, path)
    return path


def main(argv):
    if len(argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    outdir = Path(argv[1])
    wanted = []
    for req in argv[2:]:
        wanted += pins(req)
    bad = 0
    for name, version in dict.fromkeys(wanted):
        try:
            build(name, version, outdir)
        except (ValueError, OSError) as e:
            print(f"wheelhouse: {e}", file=sys.stderr)
            bad += 1
    if bad:
        return 1
    print(f"wheelhouse: {len(set(wanted))} wheels in {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
