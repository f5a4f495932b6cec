"""Output directories a command may replace: only one it can prove it wrote, never one that holds its inputs.

A command that writes a directory (an export, an evaluation report) builds it beside its destination as
`<name>.tmp` and renames it into place. Before this module, an existing destination was deleted whole first,
so `uact export RUN -o RUN` deleted the run and `uact eval -o DATASET` the dataset. Now a destination is
replaced only when every entry in it is a file of the exact set the command writes (`OutputKind.owns`): a
directory with anything else in it, or that is or holds one of the job's inputs, is refused with one line
before any work starts (`check_output`), and again at the rename (`replace_dir`), where a foreign file that
appeared meanwhile is refused too.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from unified_action.errors import UnifiedActionError


class OutputError(UnifiedActionError):
    """An output directory is not this command's to replace."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes into its output directory: file names matching `pattern` (a full-match regex)."""

    what: str  # "an export", "an evaluation report": for messages
    pattern: str

    def owns(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None

    def foreign(self, directory: Path) -> list[str]:
        """Entries of `directory` this kind does not write (a subdirectory or a link is always foreign)."""
        return sorted(p.name for p in directory.iterdir()
                      if p.is_symlink() or not p.is_file() or not self.owns(p.name))


def _overlap(out: Path, source: Path) -> bool:
    """`out` is `source` or holds it (replacing `out` would delete it)."""
    o, s = out.resolve(), source.resolve()
    return o == s or o in s.parents


def check_output(out: Path, kind: OutputKind, inputs: Iterable[Path | str] = ()) -> None:
    """Refuse, in one line, an output the command could not replace without deleting what is not its own."""
    out = Path(out)
    for source in inputs:
        if _overlap(out, Path(source)):
            raise OutputError(f"{out}: holds an input of this job ({source}); replacing it would delete it: "
                              f"choose another output directory")
    for path in (out, out.with_name(out.name + ".tmp")):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise OutputError(f"{path}: exists and is not a directory; choose another output directory")
        if path.is_dir():
            foreign = kind.foreign(path)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise OutputError(f"{path}: not {kind.what} this command wrote (it holds {shown}); nothing was "
                                  f"changed: choose a new or empty directory, or remove it yourself")


def fresh_tmp(out: Path, kind: OutputKind) -> Path:
    """An empty `<out>.tmp` to build the output in; a stale one is removed only when it holds nothing but our files."""
    out = Path(out)
    check_output(out, kind)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, out: Path, kind: OutputKind) -> Path:
    """Move the finished `tmp` to `out`, replacing an existing `out` only when it holds nothing but our files."""
    out = Path(out)
    if out.is_dir() or out.exists() or out.is_symlink():
        foreign = kind.foreign(out) if out.is_dir() and not out.is_symlink() else [out.name]
        if foreign:
            shutil.rmtree(tmp, ignore_errors=True)  # ours: built by this command
            raise OutputError(f"{out}: changed while this command ran (it now holds {', '.join(foreign[:3])}); "
                              f"nothing was replaced")
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
