"""Regenerates the committed Python stubs in chorus/pb from proto/ (needs grpcio-tools).

python proto/generate.py            # into the source tree
python proto/generate.py OUT_DIR    # elsewhere, e.g. to diff against the committed ones
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def generate(out_dir: Path) -> list[Path]:
    sources = sorted(PROTO_ROOT.glob("chorus/pb/*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(s.relative_to(PROTO_ROOT)) for s in sources),
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
    finally:
        os.chdir(cwd)
    return sorted((out_dir / "chorus" / "pb").glob("*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    for path in generate(target):
        print(path)
