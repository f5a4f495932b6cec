"""Files written whole or not at all, and a full disk said in one line with nothing left holding space.

Every writer of the package writes to a temporary path and renames it into place (a reader never sees half a
file). `writing(target, *temporaries)` wraps such a write: on any failure the temporaries are removed, and a
full device (ENOSPC, EDQUOT, or a writer's own error for it: safetensors says "os error 28", torch's C++ writer
only "file write failed") becomes one DiskFullError naming the device (its mount point) and the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from unified_action.errors import DiskFullError, UnifiedActionError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How writers that drop the errno word it (safetensors: "No space left on device (os error 28)")
_NO_SPACE_WORDS = ("no space left on device", "disk quota exceeded", f"os error {errno.ENOSPC}", f"os error {errno.EDQUOT}")
# A failed write that left less than this free on its device filled it (torch.save's C++ writer keeps no errno)
FULL_BYTES = 64 << 10

Temporary = Path | Callable[[], object]


def mount_point(path: str | Path) -> Path:
    """The mount point of the filesystem `path` is (or would be) on: the device a user frees space on."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:  # a file not created yet: its directory's filesystem
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def free_bytes(path: str | Path) -> int | None:
    try:
        st = os.statvfs(mount_point(path))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_no_space(exc: BaseException, target: str | Path) -> bool:
    """Whether `exc`, raised while writing `target`, means its device is full."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in NO_SPACE_ERRNOS
    if not isinstance(exc, Exception) or isinstance(exc, UnifiedActionError):  # ours say what they mean
        return False
    text = str(exc).lower()
    if any(w in text for w in _NO_SPACE_WORDS):
        return True
    free = free_bytes(target)  # checked before the temporaries are removed: they are what filled it
    return free is not None and free < FULL_BYTES


def no_space_message(target: str | Path) -> str:
    return (f"no space left on {mount_point(target)} while writing {target}; free space there (or write elsewhere) "
            f"and run the same command again")


def remove(*temporaries: Temporary) -> None:
    """Remove files and directories (a path) or release what a callable holds; never raises: it runs on the way out
    of a failure, whose error is the one to report."""
    for t in temporaries:
        with contextlib.suppress(Exception):
            if callable(t):
                t()
            elif Path(t).is_dir() and not Path(t).is_symlink():
                shutil.rmtree(t, ignore_errors=True)
            else:
                Path(t).unlink(missing_ok=True)


@contextlib.contextmanager
def writing(target: str | Path, *temporaries: Temporary) -> Iterator[None]:
    """Write `target` through `temporaries` (paths to delete, or callables that close and delete). On any failure
    they are removed; a full device is raised as DiskFullError naming the device and `target`."""
    try:
        yield
    except BaseException as e:
        full = is_no_space(e, target)
        remove(*temporaries)
        if full:
            raise DiskFullError(no_space_message(target)) from None
        raise


def temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`path` holds `data` whole, or is as it was: written to `<path>.tmp`, fsynced, renamed."""
    path = Path(path)
    tmp = temporary(path)
    with writing(path, tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())
