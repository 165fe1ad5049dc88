"""The documents stay true to the repository:

- every relative link in a Markdown file resolves to a file, and its #anchor to a heading;
- every `make` target a document names exists in the Makefile;
- the README's module map names every module of base/, runtime/ and function/, and nothing
  that is not there; the README stays a few screens long;
- tests/README.md names every integration module and every part of the rig;
- every file a shell example writes by redirection, and does not remove in the same
  example, is a path git ignores (or lies outside the repository);
- the benchmark's table of current figures (tests/bench/README.md) has exactly the rows
  bench.py writes, and `bench.py --report FILE --readme PATH` rewrites only that table.
  The saved figures it is fed (tests/integration/data/bench_quick_run.json) are a real
  `tests/bench/bench.py --quick --json` run; when bench.py gains a figure, make a new one.
"""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rig import paths

ROOT = paths.ROOT
README_LIMIT = 260  # lines: "what it is, the two commands, a quickstart, ... and links"
BENCH_FIGURES = Path(__file__).resolve().parent / "data" / "bench_quick_run.json"


def _markdown_files():
    """The repository's Markdown files: those git tracks and the new ones it does not
    ignore (build/ and the demo's directory are ignored)."""
    r = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others",
                        "--exclude-standard", "*.md"], capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        files = [ROOT / line for line in r.stdout.split("\n") if line]
    else:  # not a git checkout
        files = [p for p in ROOT.rglob("*.md")
                 if not {"build", ".git", ".demo", "node_modules"} & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in files if p.exists())


def _without_code(text):
    """The text with fenced code blocks and inline code spans blanked out (links inside
    them are examples, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _code_only(text):
    """The fenced code blocks and inline code spans of a Markdown text, one per line."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return blocks + spans


def _anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    out = set()
    for line in _without_fences(path.read_text(encoding="utf-8")).split("\n"):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            title = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", m.group(1))
            slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            base, n = slug, 1
            while slug in out:
                slug, n = f"{base}-{n}", n + 1
            out.add(slug)
    return out


def _without_fences(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def test_every_relative_link_in_the_markdown_resolves():
    files = _markdown_files()
    assert any(p.name == "README.md" and p.parent == ROOT for p in files), files
    broken, checked = [], 0
    for md in files:
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)",
                                 _without_code(md.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md
            where = f"{md.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif ROOT not in dest.parents and dest != ROOT:
                broken.append(f"{where}: outside the repository")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: no heading with that anchor")
    assert checked > 20, f"only {checked} relative links found: is the link pattern right?"
    assert not broken, "broken links:\n" + "\n".join(broken)


def _make_targets():
    """Every target make knows (explicit, or a pattern with %), from its database."""
    r = subprocess.run(["make", "-C", str(ROOT), "-pRrq", "-f", "Makefile", ":"],
                       capture_output=True, text=True)
    explicit, patterns, skip = set(), [], False
    for line in r.stdout.split("\n"):
        if line.startswith("# Not a target"):
            skip = True
            continue
        m = re.match(r"([^\s#:=][^:=]*?):(?!=)", line)
        if m and not skip:
            for t in m.group(1).split():
                if "%" in t:
                    patterns.append(re.compile(re.escape(t).replace("%", ".+") + "$"))
                else:
                    explicit.add(t)
        if line.strip() == "" or m:
            skip = False
    return explicit, patterns


def test_every_make_target_the_docs_name_exists():
    explicit, patterns = _make_targets()
    assert {"test", "demo", "bench", "all"} <= explicit, sorted(explicit)[:50]
    named, missing = set(), []
    for md in _markdown_files():
        for code in _code_only(md.read_text(encoding="utf-8")):
            for m in re.finditer(r"\bmake((?:\s+(?:[A-Z_][A-Z0-9_]*=\S*|-[A-Za-z]+))*)"
                                 r"\s+([a-z][\w./-]*)((?:\s*/\s*[a-z][\w.-]*)*)", code):
                for target in [m.group(2)] + re.findall(r"/\s*([a-z][\w.-]*)", m.group(3)):
                    named.add(target)
                    if target not in explicit and not any(p.match(target) for p in patterns):
                        missing.append(f"{md.relative_to(ROOT)}: make {target}")
    assert {"demo", "test", "bench", "invoke"} <= named, sorted(named)
    assert not missing, "the docs name make targets the Makefile lacks:\n" + "\n".join(missing)


def _module_map():
    """The module names the README's map (the first code block under "## The code")
    lists; a name ending in * stands for every module with that prefix."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## The code\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, flags=re.M | re.S).group(1)
    names = set()
    for line in block.split("\n"):
        names.update(re.findall(r"\b([a-z][a-z0-9_]*\*?): ", line))
        m = re.search(r"[├└]─\s*(.*)", line)
        if m:
            names.update(n.strip() for n in re.split(r"\s{2,}", m.group(1))[0].split(","))
        elif re.match(r"  [a-z]", line):  # base/: "  name  what  name  what"
            names.update(re.split(r"\s{2,}", line)[1::2])
    return names


def test_the_readme_module_map_matches_the_tree():
    names = _module_map()
    stems = {p.stem for d in ("base", "runtime", "function") for p in (ROOT / d).glob("*.c")}
    assert len(stems) > 20, stems

    def listed(stem):
        return stem in names or any(n.endswith("*") and stem.startswith(n[:-1]) for n in names)

    def exists(name):
        return name.rstrip("*") in stems if not name.endswith("*") else \
            any(s.startswith(name[:-1]) for s in stems)

    assert not [s for s in sorted(stems) if not listed(s)], \
        f"modules missing from README.md's map: {[s for s in sorted(stems) if not listed(s)]}"
    assert not [n for n in sorted(names) if not exists(n)], \
        f"README.md's map names modules that do not exist: {[n for n in names if not exists(n)]}"


def test_the_readme_stays_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    assert len(lines) <= README_LIMIT, \
        f"README.md has {len(lines)} lines (at most {README_LIMIT}): move detail to docs/"
    code = "\n".join(lines[:8])
    assert re.search(r"^make demo\s+# ", code, re.M) and re.search(r"^make test\s+# ", code, re.M), \
        "README.md no longer opens with `make demo` and `make test`"


def test_tests_readme_names_every_integration_module_and_rig_part():
    text = (ROOT / "tests" / "README.md").read_text(encoding="utf-8")
    modules = [p.stem for p in (ROOT / "tests" / "integration").glob("test_*.py")]
    rig = [p.relative_to(ROOT / "tests" / "rig").as_posix()
           for p in (ROOT / "tests" / "rig").rglob("*")
           if p.is_file() and p.name != "__init__.py" and "__pycache__" not in p.parts]
    assert len(modules) > 20 and len(rig) > 10, (modules, rig)
    missing = [m for m in modules if f"`{m}`" not in text] + \
              [r for r in rig if f"`{r}`" not in text and f"`{Path(r).name}`" not in text]
    assert not missing, f"tests/README.md does not mention: {missing}"


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench", ROOT / "tests" / "bench" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table_rows(text, bench):
    head, _, rest = text.partition(bench.TABLE_BEGIN + "\n")
    table, _, tail = rest.partition(bench.TABLE_END)
    assert head and table and tail is not None and bench.TABLE_END in text, \
        "tests/bench/README.md lost its table markers"
    rows = [line for line in table.split("\n") if line.startswith("| ")][1:]  # not the head
    return head, [r.split(" | ")[0][2:] for r in rows], [r.split(" | ")[1] for r in rows], tail


def test_the_bench_table_is_the_one_bench_py_writes():
    bench = _bench()
    readme = ROOT / "tests" / "bench" / "README.md"
    _, labels, values, _ = _table_rows(readme.read_text(encoding="utf-8"), bench)
    want = [label for label, _, _ in bench._summary_rows({})]
    assert labels == want, "tests/bench/README.md's table rows differ from bench.py's:\n" + \
        "\n".join(f"  {a!r} / {b!r}" for a, b in zip(labels, want) if a != b)
    assert all(values), "a row of the table has no value"


def test_bench_report_rewrites_only_the_table():
    bench = _bench()
    figures = json.loads(BENCH_FIGURES.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="bench-readme-"))
    try:
        copy = tmp / "README.md"
        original = (ROOT / "tests" / "bench" / "README.md").read_text(encoding="utf-8")
        copy.write_text(original, encoding="utf-8")
        r = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "bench.py"),
                            "--report", str(BENCH_FIGURES), "--readme", str(copy)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        written = copy.read_text(encoding="utf-8")
        head0, labels0, _, tail0 = _table_rows(original, bench)
        head1, labels1, values1, tail1 = _table_rows(written, bench)
        assert (head1, labels1, tail1) == (head0, labels0, tail0), "more than the table changed"
        assert f"on {figures['date']}:" in written
        missing = [label for label, v in zip(labels1, values1) if v == bench.MISSING]
        # A --quick run has no fsync=on pass, and the saved run predates figure 5d (the
        # quarantine); every other figure is in it.
        assert missing == ["1. the same, fsync=on", next(
            label for label in labels1 if label.startswith("5d."))], missing
        # The figures are the saved run's: its end-to-end time, its server CPU ratio.
        e = figures["throughput_off"]["e2e"]
        assert values1[0].startswith(f"{e['seconds']:.3f} s"), values1[0]
        copy.write_text(original.replace(bench.TABLE_END, ""), encoding="utf-8")
        r = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "bench.py"),
                            "--report", str(BENCH_FIGURES), "--readme", str(copy)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "no table markers" in r.stderr, r.stderr[-500:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


REDIRECT = re.compile(r"(?<![<>&0-9])>>?\s*([^\s;|&)<>]+)")


def _shell_example_lines():
    """(file, line number, line, the block's lines) for each line of a fenced shell block
    (sh, bash, console, shell, or no language) of the repository's Markdown files."""
    for f in _markdown_files():
        block, start, lang = None, 0, ""
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                if block is None:
                    block, start, lang = [], n, line.strip()[3:].strip()
                else:
                    if lang in ("sh", "bash", "console", "shell", ""):
                        for i, text in enumerate(block):
                            yield f, start + 1 + i, text, block
                    block = None
                continue
            if block is not None:
                block.append(line)


def test_shell_examples_write_only_where_git_ignores():
    checked, offending = 0, []
    for f, n, text, block in _shell_example_lines():
        command = text.split("#", 1)[0]
        for target in REDIRECT.findall(command):
            if target.startswith(("/", "~", "$", "&")) or target == "-":
                continue
            removed = any(re.search(rf"\b(shred|rm)\b.*\s{re.escape(target)}(?=[\s;]|$)", other)
                          for other in block)
            if removed:
                continue
            checked += 1
            ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q",
                                      "--no-index", target]).returncode == 0
            if not ignored:
                offending.append(f"{f.relative_to(ROOT)}:{n}: {text.strip()}")
    assert not offending, "examples that write into the repository:\n" + "\n".join(offending)
    assert checked >= 1, "no example writes a file: the parser found nothing to check"
