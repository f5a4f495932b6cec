"""`--engine ray`: a conversion's parts run as Ray tasks, on this machine or on a cluster.

One task per part of the plan that the local engine writes (convert._plan), each running the same
`write_part`, so the shards, sidecars, statistics and manifest are byte-identical to `--engine local` with the
same `-j`. Ray is optional (`pip install 'unified-action[scale]'`) and imported only here, only when asked for.

What a cluster needs: unified-action installed on every node, and the card, the source and --out at the same
paths on every node (a shared filesystem). Tasks read the source and write shards there directly; nothing
large passes through Ray's object store, and the driver only plans, watches and writes the manifest.

Faults: a task whose worker dies (a killed process, a lost node) is retried up to MAX_RETRIES times;
`write_part` resumes after the part's last finished shard and deletes the half-written one (shards are
written as .tmp and renamed), so a retried part ends with the same bytes. Each part is written under a file
lock in progress/, so a retry or a re-run after a killed driver never writes beside a straggler of the run
before; the straggler's lock goes with its process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from unified_action.errors import DataError

MAX_RETRIES = 3  # a part is tried at most 1 + MAX_RETRIES times when its worker dies
CONNECT_TIMEOUT_S = 5.0  # how long --address may take to accept a connection
JOIN_TIMEOUT_S = 30.0  # how long joining the cluster there may take (a busy head answers in seconds)
_INSTALL = "pip install 'unified-action[scale]'"
# Joining is tried in a child process first: ray.init() on a port that accepts connections but is no Ray head
# retries for ever (Ray 2.60), and a call stuck in Ray's C++ client cannot be interrupted in this process.
_JOIN_PROBE = ("import logging, sys, ray; ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False); "
               "ray.shutdown()")


def _ray():
    try:
        import ray
    except ImportError:
        raise DataError(f"--engine ray: Ray is not installed; install it with {_INSTALL}") from None
    return ray


def check_address(address: str, join_timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """A Ray cluster can be joined at `address` (HOST:PORT, or 'auto') in bounded time, else a one-line DataError."""
    if address != "auto":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DataError(f"--address: '{address}', expected HOST:PORT of a Ray head (`ray start --head` prints it)")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as e:
            reason = f"no answer in {CONNECT_TIMEOUT_S:.0f} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            raise DataError(f"--address {address}: no Ray cluster answers there ({reason}); start one with "
                            f"`ray start --head --port {port}` on that host, or check the address") from None
    try:
        probe = subprocess.run([sys.executable, "-c", _JOIN_PROBE, address], capture_output=True, text=True,
                               timeout=join_timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DataError(f"--address {address}: something answers there, but no Ray cluster could be joined within "
                        f"{join_timeout_s:.0f} s; give the GCS port of a Ray head (`ray start --head --port PORT`)") from None
    if probe.returncode != 0:
        last = ([line for line in probe.stderr.splitlines() if line.strip()] or [f"exit status {probe.returncode}"])[-1]
        hint = "" if "RAY_AUTH_MODE" in os.environ else " (a cluster with token authentication needs RAY_AUTH_MODE=token here)"
        raise DataError(f"--address {address}: could not join the Ray cluster: {last.strip()[:300]}{hint}")


@contextlib.contextmanager
def connect(address: str | None, workers: int, join_timeout_s: float = JOIN_TIMEOUT_S) -> Iterator[None]:
    """Join the Ray cluster at `address` (or RAY_ADDRESS), or start Ray on this machine with `workers` CPUs.

    Checked before the conversion deletes or writes anything. A connection made here is closed on exit; one
    the caller already holds (ray.is_initialized()) is used and left open."""
    ray = _ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield
        return
    if address is not None:
        check_address(address, join_timeout_s)
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        kwargs |= {"num_cpus": workers, "include_dashboard": False}
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # it went away since the check, or Ray could not start here: Ray's own words, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"--engine ray: could not {'start' if address is None else 'join'} Ray: {first}") from None
    try:
        yield
    finally:
        ray.shutdown()


class _Progress:
    """A Ray actor holding the episodes each part has written. Parts report absolute counts, so a retried part
    (which starts again from its last finished shard) corrects the bar instead of counting twice."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def report(self, part: int, episodes: int) -> None:
        self.done[part] = episodes

    def total(self) -> int:
        return sum(self.done.values())


def _run_part(write_part: Callable, cwd: str | None, lock: Path, progress, spec, out: Path, part: int, start: int, stop: int,
              settings) -> None:
    """The body of one Ray task: write the part under its lock, reporting progress to the actor."""
    from filelock import FileLock

    if cwd is not None:  # relative paths mean what they mean to the driver (the worker is fresh: max_calls=1)
        try:
            os.chdir(cwd)
        except OSError:
            raise DataError(f"{out}: relative paths need the driver's working directory {cwd} on every Ray node; "
                            f"give absolute paths on a filesystem every node sees") from None

    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        progress.report.remote(part, done)

    with FileLock(str(lock)):  # a straggler of a killed run still writing this part: wait for it to go
        write_part(spec, out, part, start, stop, settings, progress=report)


def run_parts(write_part: Callable, spec, out: Path, parts: list[list[int]], settings, bar, *, lock_dir: Path,
              poll_s: float = 0.25) -> None:
    """Write every part as one Ray task (`write_part(spec, out, part, start, stop, settings, progress=...)`), each
    under its lock `lock_dir/part-<part>.lock`."""
    ray = _ray()
    card = spec.card().name
    # paths are handed over as given (the shards record the source's path), so a relative one needs our cwd
    relative = any(p is not None and not os.path.isabs(p) for p in (spec.card_path, spec.root, str(out)))
    cwd = os.getcwd() if relative else None
    progress = ray.remote(num_cpus=0, max_restarts=-1)(_Progress).remote()
    # max_calls=1: every part gets a fresh worker process, so a simulator's GL context and TensorFlow (the RLDS
    # reader opens its tfds build inside the task) never share a process, and a part's memory goes with it
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, max_calls=1)(_run_part)
    refs = {task.options(name=f"{card}-part-{p:04d}").remote(write_part, cwd, lock_dir / f"part-{p:04d}.lock", progress, spec,
                                                             Path(out), p, a, b, settings): p
            for p, (a, b) in enumerate(parts)}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            for ref in done:
                _result(ray, ref, out, refs[ref])
            with contextlib.suppress(ray.exceptions.RayError):  # the bar is not worth failing a conversion for
                bar.update(ray.get(progress.total.remote(), timeout=10) - bar.n)
        bar.update(bar.total - bar.n)  # every part finished (its last reports may still be on their way)
    finally:
        for ref in pending:  # a failed part or Ctrl-C: the other parts stop too (their finished shards stay)
            ray.cancel(ref, force=True)
        ray.kill(progress)


def _result(ray, ref, out: Path, part: int) -> None:
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the part raised: the same error as --engine local gives
        if isinstance(e.cause, Exception):
            raise e.cause from None
        raise DataError(f"{out}: part {part} failed on Ray: {(str(e).strip().splitlines() or [''])[0]}") from None
    except ray.exceptions.RayError as e:  # its worker died more often than it was retried, or its node was lost
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{out}: part {part} failed on Ray after {MAX_RETRIES} retries ({type(e).__name__}: {first}); "
                        f"run the same command again to resume") from None
