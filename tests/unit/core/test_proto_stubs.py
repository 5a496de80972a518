"""The committed stubs must be exactly what protoc makes from proto/ today."""

import importlib.util
from pathlib import Path

import pytest

from tests.support import REPO


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_proto_sources(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    fresh = _generator().generate(tmp_path)
    assert fresh, "protoc produced nothing"
    committed = sorted((REPO / "chorus" / "pb").glob("*_pb2*.py*"))
    assert [p.name for p in fresh] == [p.name for p in committed]
    stale = [
        p.name for p, c in zip(fresh, committed, strict=True) if p.read_text() != c.read_text()
    ]
    assert not stale, f"stale stubs {stale}: run python proto/generate.py and commit"
