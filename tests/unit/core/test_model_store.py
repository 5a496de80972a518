"""The model store's pure parts: which repositories are the store, which folders are versions,
what a record says (the bucket itself is tested on a real nats-server in
tests/integration/test_model_store.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from chorus.core.model_store import (
    DEFAULT_BUCKET,
    DigestMismatch,
    StoredVersion,
    StoreError,
    address,
    identify,
    sha256_file,
    version_folders,
    version_key,
)


def _version(root: Path, model: str, version: str) -> Path:
    folder = root / model / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "manifest.json").write_text(json.dumps({"name": model, "version": version}))
    return folder


@pytest.mark.parametrize(
    ("repository", "bucket"),
    [("nats:", DEFAULT_BUCKET), ("nats:team-a", "team-a"), (Path("nats:"), DEFAULT_BUCKET),
     ("models", None), (Path("/srv/models"), None)],
)  # fmt: skip
def test_a_repository_is_the_store_only_when_it_says_nats(
    repository: str | Path, bucket: str | None
) -> None:
    assert address(repository) == bucket


def test_a_bucket_name_nats_cannot_take_is_refused() -> None:
    with pytest.raises(StoreError, match="letters, digits"):
        address("nats:team.a")


def test_version_folders_of_a_repository_a_model_and_a_version(tmp_path: Path) -> None:
    a1, a2, b1 = (_version(tmp_path, "a", "1"), _version(tmp_path, "a", "2"),
                  _version(tmp_path, "b", "1"))  # fmt: skip
    assert version_folders(tmp_path) == [a1, a2, b1]
    assert version_folders(tmp_path / "a") == [a1, a2]
    assert version_folders(a2) == [a2]
    with pytest.raises(StoreError, match="no model version here"):
        version_folders(tmp_path / "a" / "missing")


def test_identify_refuses_a_manifest_without_its_file_or_with_a_bad_name(tmp_path: Path) -> None:
    folder = _version(tmp_path, "a", "1")
    assert identify(folder)[:2] == ("a", "1")
    (folder / "manifest.json").write_text(json.dumps({"name": "../a", "version": "1"}))
    with pytest.raises(StoreError, match="name"):
        identify(folder)
    (folder / "manifest.json").write_text(json.dumps({"name": "a", "file": "other.onnx"}))
    with pytest.raises(StoreError, match=r"other\.onnx"):
        identify(folder)


def test_a_record_round_trips_and_names_its_objects(tmp_path: Path) -> None:
    record = StoredVersion("a", "2", {"model.onnx": "ab" * 32}, 10, "now", {"replicas": 2})
    assert StoredVersion.from_json(record.to_json()) == record
    assert record.key == "versions/a/2"
    assert record.file_key("model.onnx") == "files/a/2/model.onnx"


def test_digests_and_the_refusal_name_model_version_and_both(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    err = DigestMismatch("a", "3", "model.onnx", "want", "got")
    assert all(part in err.message for part in ("model a", "version 3", "want", "got"))
    assert err.code_name == "FAILED_PRECONDITION"


def test_numbered_versions_sort_numerically() -> None:
    assert sorted(["10", "9", "beta"], key=version_key) == ["beta", "9", "10"]
