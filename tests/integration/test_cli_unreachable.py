"""Every command that talks to a service answers a dead address with one line on stderr and
a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chorus.launch.natsserver import free_port

DEAD = f"127.0.0.1:{free_port()}"
DEAD_NATS = f"nats://{DEAD}"
COMMANDS = {
    "status": ["status", "--router", DEAD],
    "models ls": ["models", "ls", "--router", DEAD],
    "models index": ["models", "index", "--service", DEAD],
    "models load": ["models", "load", "--service", DEAD, "--model", "m"],
    "submit digits": ["submit", "--router", DEAD, "--limit", "1"],
    "submit input": ["submit", "--router", DEAD, "--capability", "c", "--input", "x={npy}"],
    "fusion calibrate": ["fusion", "calibrate", "--router", DEAD, "--nats-url", DEAD_NATS,
                         "--capability", "c", "--input", "x={npy}", "--truth", "{npy}"],
    "review": ["review", "--list", "--nats-url", DEAD_NATS, "--router", DEAD],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_dead_address_is_one_line_and_a_failure(name: str, tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 3), np.float32))
    args = [a.format(npy=npy) for a in COMMANDS[name]]
    done = subprocess.run([sys.executable, "-m", "chorus.cli", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chorus "), done.stderr
    assert "UNAVAILABLE" in lines[0] or "cannot reach NATS" in lines[0], lines[0]
