"""Fault injection for the reliability tests: real failures at chosen points of a real run.

`UACT_FAULT` holds comma-separated faults, each `what@step[:rank]`:
- `kill_in_save@6`: SIGKILL this process while checkpoint 6 is half-made (after DeepSpeed's files, before
  the completion marker), as a preempted or OOM-killed job would be.
- `nan@3` or `nan@3:1`: make the loss of step 3 non-finite (on rank 1 only), as a bad batch or an
  overflow would.
Unset in normal runs; reading one environment variable costs nothing.
"""

from __future__ import annotations

import os
import signal


def _faults() -> list[tuple[str, int, int | None]]:
    out = []
    for item in filter(None, os.environ.get("UACT_FAULT", "").split(",")):
        what, _, at = item.partition("@")
        step, _, rank = at.partition(":")
        out.append((what.strip(), int(step), int(rank) if rank else None))
    return out


def _active(what: str, step: int) -> bool:
    rank = int(os.environ.get("RANK", 0))
    return any(w == what and s == step and (r is None or r == rank) for w, s, r in _faults())


def maybe_kill(point: str, step: int) -> None:
    if _active(f"kill_in_{point}", step):
        os.kill(os.getpid(), signal.SIGKILL)


def nan_at(step: int) -> bool:
    return _active("nan", step)
