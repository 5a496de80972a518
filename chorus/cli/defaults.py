"""Defaults the commands share."""

from __future__ import annotations

from pathlib import Path

DEFAULT_REPOSITORY = Path("models")
DEFAULT_DATA_DIR = Path(".chorus")
DEMO_REPOSITORY = DEFAULT_DATA_DIR / "demo-models"
"""Where `chorus demo` and `chorus up --demo` build the demo: never a user's repository."""
GC_FIRST_GENERATION = 20_000
"""Allocations between young-generation collections in a serving process (CPython: 700)."""
DEMO_SERVED = ["logreg", "forest", "mlp", "knn", "stack", "gate", "caption"]
"""Three members, the arbiter, the stacking meta-model, the gate and the caption model.
(The multi-task model is built too, but not started: it would join classify/digits.)"""
CAPABILITY = "classify/digits"
PRIORITIES = ("CRITICAL", "NORMAL", "BATCH")
STOP_WHILE_STARTING_S = 0.5
"""How long a service stopped before it served may take to close what it had opened."""
