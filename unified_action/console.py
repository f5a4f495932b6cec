"""The rich console every command prints through."""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPE_WIDTH = 160  # rich assumes 80 columns when output is piped; tables of slot names need more


def make_console() -> Console:
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPE_WIDTH)
