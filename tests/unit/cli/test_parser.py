"""The command line's conventions, read off the parser itself: help on every flag, `-o json`
on every command that prints, `--version`, the exit codes in `chorus --help`, and the router
and NATS addresses from CHORUS_ROUTER / CHORUS_NATS_URL unless a flag says otherwise."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

import chorus
from chorus.cli.common import nats_url, router
from chorus.cli.main import _parser, main


def always_json(name: str) -> bool:
    """`chorus serve ...` prints one JSON line once serving, whatever it is asked."""
    return name.startswith("chorus serve ")


def commands(
    parser: argparse.ArgumentParser, name: str = "chorus"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from commands(sub, f"{name} {sub_name}")


def test_every_flag_and_argument_has_help() -> None:
    bare = [
        f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, parser in commands(_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert not bare, f"no help text: {bare}"


def test_every_command_that_prints_takes_output_json() -> None:
    leaves = [(n, p) for n, p in commands(_parser()) if "func" in p._defaults]
    assert len(leaves) > 20
    without = [
        name
        for name, parser in leaves
        if not always_json(name)
        and not any("--output" in a.option_strings for a in parser._actions)
    ]
    assert not without, f"no -o json: {without}"
    for name, parser in leaves:
        if always_json(name):
            continue
        flags = {f for a in parser._actions for f in a.option_strings}
        assert {"-o", "--json"} <= flags, name
        args = parser.parse_args([*_required(name), "-o", "json"])
        assert args.output == "json"


def _required(name: str) -> list[str]:
    """Enough arguments for each command's parser to accept the line."""
    return {
        "chorus models add": ["m.onnx", "--name", "m", "--capability", "c"],
        "chorus models calibrate": ["--model", "m", "--input", "x=a.npy", "--truth", "t.npy"],
        "chorus models push": ["dir"],
        "chorus models rm": ["m"],
        "chorus models index": ["--service", "h:1"],
        "chorus models load": ["--service", "h:1", "--model", "m"],
        "chorus models unload": ["--service", "h:1", "--model", "m"],
        "chorus plan": ["--inputs", "p.yaml"],
        "chorus k8s render": ["--out", "o"],
        "chorus fusion calibrate": ["--capability", "c", "--input", "x=a.npy", "--truth", "t"],
        "chorus result": ["t1"],
        "chorus feedback": ["t1", "--labels", "1"],
    }.get(name, [])


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"chorus {chorus.__version__}"
    run = subprocess.run([sys.executable, "-m", "chorus.cli", "--version"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == f"chorus {chorus.__version__}"


def test_help_documents_exit_codes_and_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for line in ("0  done", "1  the task or command failed", "2  usage", "CHORUS_ROUTER",
                 "CHORUS_NATS_URL"):  # fmt: skip
        assert line in out


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["status", "--no-such-flag"])
    assert done.value.code == 2
    assert main(["feedback", "t1", "--labels", "one,two"]) == 2
    assert "--labels: expected comma-separated ints" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line",
    [
        ["status"], ["models", "ls"], ["submit"], ["result", "t"],
        ["feedback", "t", "--labels", "1"], ["review"],
        ["fusion", "calibrate", "--capability", "c", "--input", "x=a", "--truth", "t"],
    ],
)  # fmt: skip
def test_router_and_nats_come_from_the_environment_and_flags_win(
    line: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHORUS_ROUTER", raising=False)
    monkeypatch.delenv("CHORUS_NATS_URL", raising=False)
    args = _parser().parse_args(line)
    assert router(args) == "127.0.0.1:50051" and nats_url(args) == "nats://127.0.0.1:4222"
    monkeypatch.setenv("CHORUS_ROUTER", "10.0.0.9:7000")
    monkeypatch.setenv("CHORUS_NATS_URL", "nats://10.0.0.9:4000")
    args = _parser().parse_args(line)
    assert router(args) == "10.0.0.9:7000" and nats_url(args) == "nats://10.0.0.9:4000"
    flags = [*line, "--router", "h:1"] if "--router" in _flags(line) else line
    flags = [*flags, "--nats-url", "nats://h:2"] if "--nats-url" in _flags(line) else flags
    args = _parser().parse_args(flags)
    if "--router" in _flags(line):
        assert router(args) == "h:1"
    if "--nats-url" in _flags(line):
        assert nats_url(args) == "nats://h:2"


def _flags(line: list[str]) -> set[str]:
    found = dict(commands(_parser()))
    words = [w for w in line if not w.startswith("-")]
    for n in range(len(words), 0, -1):
        key = "chorus " + " ".join(words[:n])
        if key in found:
            return {f for a in found[key]._actions for f in a.option_strings}
    return set()
