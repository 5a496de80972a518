"""Every command the READMEs show runs as written, checked without starting anything.

The shell blocks (```bash, ```sh, ```console) of README.md and bench/README.md are cut into
commands (continuation lines joined, comments dropped, split at `&&`, `;`, `|`, `&` and
redirections, `$(...)` checked as a command of its own). Each `chorus ...` line must parse with
the real parser (`chorus.cli.main._parser`); the other programs are checked as far as a file
can be: pip extras exist in pyproject, scripts, test files and bench scripts exist, `python
-c` code compiles. A program no rule knows fails the test, so a new kind of command gets a
rule. Python blocks must compile, import only names that exist, and call only methods the
client has. The CLI table's flags exist on the commands they are shown with, and every link to
a heading or a file resolves."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chorus.cli.main import _parser
from chorus.client import AsyncTaskClient, TaskClient
from tests.support import REPO

DOCS = ("README.md", "bench/README.md")
SHELL = {"bash", "sh", "shell", "console"}

# Programs outside the project: nothing here can check more than that they are named.
EXTERNAL = {"kubectl", "openssl", "base64", "export", "cd", "nats", "nats-server", "perf_analyzer"}


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.words)}"


def blocks(doc: str) -> Iterator[tuple[str, int, str]]:
    """(language, first line number, body) of every fenced block."""
    text = (REPO / doc).read_text()
    for m in re.finditer(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", text, flags=re.M | re.S):
        body = textwrap.dedent(m.group(3)) if m.group(1) else m.group(3)
        yield m.group(2), text.count("\n", 0, m.start()) + 2, body


def _substitutions(line: str) -> tuple[str, list[str]]:
    """The line with each `$(...)` replaced by a word, and the commands inside them."""
    inner: list[str] = []
    out, i, quote = [], 0, ""
    while i < len(line):
        if line.startswith("$(", i) and quote != "'":
            depth, j, q = 1, i + 2, ""
            while depth:
                c = line[j]
                if q:
                    q = "" if c == q else q
                elif c in "'\"":
                    q = c
                else:
                    depth += {"(": 1, ")": -1}.get(c, 0)
                j += 1
            inner.append(line[i + 2 : j - 1])
            out.append("SUBSTITUTED")
            i = j
            continue
        c = line[i]
        if c == quote:
            quote = ""
        elif not quote and c in "'\"":
            quote = c
        out.append(c)
        i += 1
    return "".join(out), inner


def _split(text: str) -> Iterator[list[str]]:
    """One shell line as its simple commands' words (redirection targets dropped)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words: list[str] = []
    redirect = False
    for token in lex:
        if token in {"&&", "||", ";", "|", "&"}:
            if words:
                yield words
            words, redirect = [], False
        elif (set(token) <= set("<>&12") and ">" in token) or token == "<":
            redirect = True
        elif redirect:
            redirect = False
        else:
            words.append(token)
    if words:
        yield words


def commands(doc: str) -> Iterator[Command]:
    for lang, start, body in blocks(doc):
        if lang not in SHELL:
            continue
        lines = body.split("\n")
        n = 0
        while n < len(lines):
            first, text = n, lines[n]
            while text.endswith("\\") and n + 1 < len(lines):
                n += 1
                text = text[:-1] + " " + lines[n].strip()
            n += 1
            if lang == "console":
                if not text.startswith("$ "):
                    continue  # output, not a command
                text = text[2:]
            pending = [text]
            while pending:
                line, inner = _substitutions(pending.pop())
                pending += inner
                for words in _split(line):
                    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                        words = words[1:]  # VAR=value before the program
                    if words:
                        yield Command(doc, start + first, tuple(words))


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands(doc)]


def _extras() -> set[str]:
    return set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )


def _program(word: str) -> str:
    return word.removeprefix(".venv/bin/")


def check_chorus(cmd: Command) -> str | None:
    args = [w.replace("SUBSTITUTED", "task-1") for w in cmd.words[1:]]
    if any(w in {"...", "…"} or re.fullmatch(r"<[^>]+>", w) for w in args):
        return "an elided or <placeholder> argument: write a value that parses"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(args)
    except SystemExit as stop:
        if stop.code == 0 and {"--version", "--help", "-h"} & set(args):
            return None
        return "refused by the parser: " + err.getvalue().strip().splitlines()[-1]
    return None


def check_other(cmd: Command) -> str | None:
    program, args = _program(cmd.words[0]), list(cmd.words[1:])
    if program in EXTERNAL:
        return None
    if program in {"python", "python3"}:
        if args[:1] == ["-c"]:
            compile(args[1], str(cmd), "exec")
            return None
        if args[:1] == ["-m"]:
            return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
        script = REPO / args[0]
        if not script.is_file():
            return f"no script {args[0]}"
        source = script.read_text()
        flags = [a for a in args[1:] if a.startswith("--") and f'"{a}"' not in source]
        return f"{args[0]} takes no {flags}" if flags else None
    if program == "pip":
        wanted = {
            e for w in args for m in re.finditer(r"\[([\w,-]+)\]", w) for e in m[1].split(",")
        }
        unknown = wanted - _extras()
        return f"no extra {sorted(unknown)} in pyproject.toml" if unknown else None
    if program == "pytest":
        paths = [a for a in args if a.endswith(".py") or "/" in a]
        missing = [p for p in paths if not (REPO / p).exists()]
        return f"no such test path {missing}" if missing else None
    if "/" in program:
        path = REPO / program
        return None if path.is_file() and path.stat().st_mode & 0o111 else f"no script {program}"
    return f"no rule for the program {program!r}: add one to this test"


def test_the_readmes_show_commands() -> None:
    found = all_commands()
    chorus = [c for c in found if _program(c.words[0]) == "chorus"]
    assert len(chorus) > 30, [str(c) for c in found]
    # The tour's command substitution is checked as a command of its own.
    assert any("--async" in c.words for c in chorus)


@pytest.mark.parametrize("cmd", all_commands(), ids=str)
def test_each_command_runs_as_written(cmd: Command) -> None:
    check = check_chorus if _program(cmd.words[0]) == "chorus" else check_other
    problem = check(cmd)
    assert problem is None, f"{cmd}: {problem}"


def _python_blocks() -> list[tuple[str, int, str]]:
    return [(doc, line, body) for doc in DOCS for lang, line, body in blocks(doc)
            if lang in {"python", "py"}]  # fmt: skip


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: f"{b[0]}:{b[1]}")
def test_each_python_block_compiles_and_names_what_exists(block: tuple[str, int, str]) -> None:
    doc, line, body = block
    tree = ast.parse(body, f"{doc}:{line}")
    compile(tree, f"{doc}:{line}", "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chorus"):
            module = importlib.import_module(node.module or "")
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{doc}:{line}: {node.module} has no {missing}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "client"
        ):
            for cls in (TaskClient, AsyncTaskClient):
                assert hasattr(cls, node.attr), f"{doc}:{line}: {cls.__name__} has no {node.attr}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cli_rows() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## CLI\n", 1)[1].split("\n## ", 1)[0]
    return [m[1] for m in re.finditer(r"^\| `(chorus [^`]+)`", section, flags=re.M)]


@pytest.mark.parametrize("row", _cli_rows())
def test_the_cli_table_shows_flags_its_commands_have(row: str) -> None:
    """`chorus models index|load|unload --service ...`: each flag on some command named."""
    parsers, depth = [_parser()], 0
    for word in row.split()[1:]:
        names = word.replace("\\|", "|").split("|")
        if not all(re.fullmatch(r"[a-z][a-z0-9]*", n) for n in names):
            break
        nxt = [sub[n] for p in parsers for n in names if n in (sub := _subcommands(p))]
        if not nxt:
            break
        parsers, depth = nxt, depth + 1
    assert depth, f"{row}: names no command"
    flags = {f for p in parsers for a in p._actions for f in a.option_strings}
    shown = set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", row))
    assert shown <= flags, f"{row}: {sorted(shown - flags)} not a flag of that command"


def _anchor(heading: str) -> str:
    """GitHub's: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", (REPO / doc).read_text(), flags=re.M | re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_resolves(doc: str) -> None:
    text = (REPO / doc).read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / doc).parent / path if path else REPO / doc
        heading_missing = (
            file.exists() and file.suffix == ".md" and anchor
            and anchor not in _anchors(str(file.relative_to(REPO)))
        )  # fmt: skip
        if not file.exists() or heading_missing:
            broken.append(target)
    assert not broken, f"{doc}: links to nothing: {broken}"
