"""What the documentation tells a user to type leaves the repository clean: every file a
shell example writes by redirection, and does not remove in the same example, is a path
git ignores (or lies outside the repository)."""
import re
import subprocess

from rig import paths

REDIRECT = re.compile(r"(?<![<>&0-9])>>?\s*([^\s;|&)<>]+)")


def _examples():
    """(file, line number, text of the line, the block's lines) for each line of a fenced
    shell block in README.md and docs/."""
    files = [paths.ROOT / "README.md", *sorted((paths.ROOT / "docs").glob("*.md")),
             *sorted(paths.ROOT.glob("*/README.md")), *sorted(paths.ROOT.glob("tests/*/README.md"))]
    for f in files:
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
    for f, n, text, block in _examples():
        command = text.split("#", 1)[0]
        for target in REDIRECT.findall(command):
            if target.startswith(("/", "~", "$", "&")) or target == "-":
                continue
            removed = any(re.search(rf"\b(shred|rm)\b.*\s{re.escape(target)}(?=[\s;]|$)", other)
                          for other in block)
            if removed:
                continue
            checked += 1
            ignored = subprocess.run(["git", "-C", str(paths.ROOT), "check-ignore", "-q",
                                      "--no-index", target]).returncode == 0
            if not ignored:
                offending.append(f"{f.relative_to(paths.ROOT)}:{n}: {text.strip()}")
    assert not offending, "examples that write into the repository:\n" + "\n".join(offending)
    assert checked >= 1, "no example writes a file: the parser found nothing to check"
