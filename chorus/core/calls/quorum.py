"""One error for a task too few of whose members answered, shared by the router (two-hop
path) and the fuser (one-way path) so a caller sees the same code and message either way."""

from __future__ import annotations

from chorus.core.errors import ChorusError, DeadlineExceeded, InvalidArgument, Unavailable


def too_few_members(
    capability: str, errors: dict[str, ChorusError], answered: int = 0, needed: int = 1
) -> ChorusError:
    """The most actionable error: bad input first, then out of time, else unavailable."""
    invalid = [e for e in errors.values() if isinstance(e, InvalidArgument)]
    if invalid:
        return invalid[0]
    detail = "; ".join(e.message for e in errors.values())
    short = f"capability {capability!r}: {answered} member(s) answered, {needed} needed"
    if all(isinstance(e, DeadlineExceeded) for e in errors.values()):
        return DeadlineExceeded(f"{short}; out of time: {detail}")
    return Unavailable(f"{short}: {detail}")
