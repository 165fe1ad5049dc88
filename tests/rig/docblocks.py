"""The fenced code blocks of the project's Markdown documents, for the tests that run the
documented commands as written (tests/integration/test_deploy_sql.py, test_operations.py).

    for b in docblocks.blocks("docs/deploy.md", "sql"):
        b.text, b.line, b.first      # the block, the line its fence opens on, its first line
        b.needs_aws                  # its first line is "# needs AWS ..." (not run here)

A block whose first line says `# needs AWS` (sh) or `-- needs AWS` (sql) calls AWS and is
not run by the tests; every other block is.
"""
import re

from . import paths

# A fence may be indented (a block inside a list item): its lines lose that indentation.
_FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)


class Block:
    def __init__(self, path, lang, info, text, line):
        self.path = path      # the document, relative to the repository
        self.lang = lang      # the fence's language: sh, sql, logs-insights, ...
        self.info = info      # the whole info string
        self.text = text      # the block's lines, each ending in a newline
        self.line = line      # the line number of the opening fence
        self.first = text.split("\n", 1)[0].strip()
        self.needs_aws = bool(re.match(r"(#|--) needs AWS\b", self.first))

    def where(self):
        return f"{self.path}:{self.line}"

    def __repr__(self):
        return f"<{self.lang} block at {self.where()}: {self.first[:60]!r}>"


def blocks(relpath, lang=None):
    """The fenced blocks of a document in order, of one language when lang is given."""
    text = (paths.ROOT / relpath).read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        indent, info = m.group(1), m.group(2).strip()
        block_lang = info.split()[0] if info else ""
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m.group(3).splitlines(keepends=True))
        if lang is None or block_lang == lang:
            out.append(Block(relpath, block_lang, info, body,
                             text.count("\n", 0, m.start()) + 1))
    return out
