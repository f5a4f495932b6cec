"""Child processes that die with their parent: a killed `uact` command must not leave workers running for minutes."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys


def parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux: prctl PR_SET_PDEATHSIG, which also
    holds across exec, so it serves as a subprocess's preexec_fn). Elsewhere nothing happens."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
