"""`--engine ray` on a real local Ray cluster: the same bytes as `--engine local`, a killed worker is retried to
the same dataset, a killed driver resumes to it, and a missing Ray or an unreachable --address is one line.

The cluster is started with `ray start --head --block` (not `ray.init()` in the test process): the driver then
joins it through `--address` as it would a real cluster, a driver can be killed while the cluster lives on,
and the fixture stops exactly the processes it started (its own process group; `ray stop` would stop every
Ray on the machine)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from support import CARDS, ROOT, run_cli

from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.ray_engine import CONNECT_TIMEOUT_S, check_address
from unified_action.errors import DataError

pytestmark = pytest.mark.slow

BIN = os.path.dirname(sys.executable)
UACT, RAY = os.path.join(BIN, "uact"), os.path.join(BIN, "ray")
# carracing, 8 episodes in 2 parts (one task per CPU of the test cluster), one episode per shard (0.01 MiB):
# every part finishes shards mid-task
SIM = dict(card="carracing", episodes=8, steps=30, seed=7, size=32, shard_mb=0.01, workers=2)


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:  # held open together: n distinct ports
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _session(sid: int) -> list[int]:
    """The live processes of session `sid` (Ray's workers get process groups of their own, not sessions)."""
    out = []
    for d in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if d.name.isdigit() and int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def tree(root: Path) -> dict[str, str]:
    """Every file of a dataset with its sha256; the Ray engine's part locks (empty files) are not data."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".lock"}


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs, a small object store, no dashboard, no usage stats.
    Its workers import unified_action from this checkout (PYTHONPATH), as a cluster's nodes have it installed."""
    port, *others = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="uray-", dir="/tmp")  # short: Ray's socket paths are bounded
    with pytest.MonkeyPatch.context() as mp:
        # Ray replaces 127.0.0.1 by the machine's outward address (for other nodes to reach); this keeps the
        # cluster, its drivers (this process and the `uact` subprocesses) and all their traffic on loopback
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # explicit: otherwise Ray 2.60 turns token authentication on where ~/.ray/auth_token exists (a local
        # ray.init() writes one), and a driver joins such a cluster only with RAY_AUTH_MODE=token
        mp.setenv("RAY_AUTH_MODE", "disabled")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        log = open(Path(temp) / "ray-start.log", "w+")  # noqa: SIM115  (closed in the finally below)
        proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
             "--object-store-memory", str(100 * 10**6), "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp,
             *(f"--{opt}={p}" for opt, p in zip(("ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port"), others))],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 120
            while "Ray runtime started" not in Path(log.name).read_text():
                assert proc.poll() is None and time.time() < deadline, Path(log.name).read_text()[-2000:]
                time.sleep(0.2)
            yield f"127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            for pid in _session(proc.pid):  # whatever is left of the session it was started in (workers included)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            log.close()
            shutil.rmtree(temp, ignore_errors=True)


def _record_args(out: Path, engine: str = "local", address: str | None = None) -> list[str]:
    args = [UACT, "data", "record", str(CARDS / f"{SIM['card']}.md"), "-o", str(out), "-n", str(SIM["episodes"]),
            "--steps", str(SIM["steps"]), "--seed", str(SIM["seed"]), "--size", str(SIM["size"]),
            "--shard-mb", str(SIM["shard_mb"]), "-j", str(SIM["workers"]), "--engine", engine]
    return args + (["--address", address] if address else [])


@pytest.fixture(scope="module")
def sim_local(tmp_path_factory) -> dict[str, str]:
    """The reference: what `--engine local` writes for SIM, as the file tree with checksums."""
    out = tmp_path_factory.mktemp("local") / "carracing"
    subprocess.run(_record_args(out), check=True, capture_output=True)
    return tree(out)


def _sidecars(out: Path, part: int | None = None) -> list[Path]:
    pat = "*.tar.json" if part is None else f"*-{part:04d}-*.tar.json"
    return sorted((out / "progress").glob(pat))


def _ray_worker(task_name: str) -> int | None:
    """The pid of the Ray worker running the task named so: Ray titles a busy worker `ray::<task name>`."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "cmdline").read_bytes().split(b"\0")[0].strip() == f"ray::{task_name}".encode():
                    return int(d.name)
    return None


def test_ray_writes_the_same_bytes_as_local(ray_head, sim_local, tmp_path):
    """In-process driver joining the cluster: every shard, sidecar, sample, stats.json, card and manifest equal."""
    spec = SourceSpec(str(CARDS / f"{SIM['card']}.md"), "sim", episodes=SIM["episodes"], steps=SIM["steps"], seed=SIM["seed"])
    settings = WriteSettings(image_size=(SIM["size"],) * 2, shard_bytes=int(SIM["shard_mb"] * 2**20))
    ds = write_dataset(spec, tmp_path / "ray", workers=SIM["workers"], settings=settings, progress=False,
                       engine="ray", address=ray_head)
    assert tree(ds.root) == sim_local
    assert len({s["part"] for s in ds.manifest["shards"]}) == 2 and len(ds.shards) == 8
    # the parts ran as Ray tasks (each under its lock), not in this process
    assert sorted(p.name for p in (ds.root / "progress").glob("*.lock")) == [f"part-{p:04d}.lock" for p in range(2)]
    import ray

    assert not ray.is_initialized()  # the connection it made is closed again


def test_killed_ray_worker_is_retried_to_the_same_dataset(ray_head, sim_local, tmp_path):
    """SIGKILL the worker process of part 1 after its first finished shard: Ray retries the task, which resumes
    after that shard and deletes the half-written one; the dataset ends identical to --engine local."""
    out = tmp_path / "ray"
    driver = subprocess.Popen(_record_args(out, "ray", ray_head), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    name = f"{SIM['card']}-part-0001"
    try:
        deadline, pid = time.time() + 120, None
        while time.time() < deadline and not _sidecars(out, 1):
            pid = _ray_worker(name) or pid
            time.sleep(0.01)
        pid = _ray_worker(name) or pid
        done_at_kill = len(_sidecars(out, 1))
        assert pid is not None and done_at_kill >= 1, "part 1 did not start on a Ray worker"
        os.kill(pid, signal.SIGKILL)
        assert done_at_kill < 4  # part 1 (4 episodes, 4 shards) was mid-task
        retried = None
        while driver.poll() is None and time.time() < deadline:
            retried = retried or (p if (p := _ray_worker(name)) not in (None, pid) else None)
            time.sleep(0.01)
        assert driver.wait(max(1, deadline - time.time())) == 0, driver.stderr.read().decode()[-2000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    assert retried is not None, "part 1 was not run again on another worker"
    assert tree(out) == sim_local
    assert not list(out.rglob("*.tmp"))


def test_killed_ray_driver_resumes_to_the_same_dataset(ray_head, sim_local, tmp_path):
    """SIGKILL the driver (`uact data record --engine ray`) after the first finished shard; Ray stops its
    tasks, and the same command again resumes after the finished shards to the dataset --engine local writes."""
    out = tmp_path / "ray"
    driver = subprocess.Popen(_record_args(out, "ray", ray_head), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _sidecars(out):
            time.sleep(0.01)
    finally:
        driver.kill()
        driver.wait()
    finished = len(_sidecars(out))
    assert 1 <= finished < 8 and not (out / "manifest.json").exists()
    again = subprocess.run(_record_args(out, "ray", ray_head), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree(out) == sim_local
    assert not list(out.rglob("*.tmp"))


def _lerobot_source(tmp_path: Path) -> tuple[Path, Path]:
    from data.lerobot_fixture import write_lerobot_v3

    rng = np.random.default_rng(0)
    eps = [{"frames": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (n, 14)).astype(np.float32), "state": rng.uniform(-1, 1, (n, 14)).astype(np.float32),
            "task": "Insert the peg into the socket."} for n in (7, 9, 5, 6)]
    root = write_lerobot_v3(tmp_path / "lerobot", eps, video=False)
    card = tmp_path / "lerobot_aloha_sim_insertion_human.md"  # the real card, its camera shrunk to the fixture's
    card.write_text((CARDS / card.name).read_text().replace("height: 480, width: 640", "height: 32, width: 32"))
    return card, root


def test_convert_lerobot_on_ray_equals_local(ray_head, tmp_path):
    """`uact data convert` of a LeRobot v3 source in 2 parts writes the same bytes with --engine local, with
    --engine ray joining the cluster (--address), and with --engine ray starting Ray itself (no --address).
    The paths are relative to the driver's working directory, which is not the Ray workers' (the source's path
    is recorded in the shards, so it is handed over as given)."""
    card, root = _lerobot_source(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for name, engine in (("local", ["--engine", "local"]), ("cluster", ["--engine", "ray", "--address", ray_head]),
                         ("own", ["--engine", "ray"])):
        cmd = [UACT, "data", "convert", card.name, "--source", root.name, "-o", name, "-j", "2",
               "--size", "0", "--shard-mb", "0.01", *engine]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
    assert tree(tmp_path / "cluster") == tree(tmp_path / "local") == tree(tmp_path / "own")
    assert len(list((tmp_path / "local").glob("*.tar"))) >= 4
    assert len(list((tmp_path / "own" / "progress").glob("*.lock"))) == 2  # it did run on Ray


def test_a_failing_part_is_the_same_one_line_error_as_local(ray_head, tmp_path):
    """A part whose source is broken (a shard dataset as the source, one of its shards truncated) raises the
    error --engine local raises, not Ray's wrapper with a remote traceback; it is not retried as a crash."""
    card, root = _lerobot_source(tmp_path)
    src = write_dataset(SourceSpec(str(card), "lerobot", root=str(root)), tmp_path / "src", workers=1,
                        settings=WriteSettings(image_size=None, shard_bytes=10_000), progress=False)
    last = src.root / src.shards[-1].name
    last.write_bytes(last.read_bytes()[:-512])
    spec = SourceSpec(str(src.root), "shards", root=str(src.root))
    errors = {}
    for engine in ("local", "ray"):
        with pytest.raises(DataError) as e:
            write_dataset(spec, tmp_path / engine, workers=2, settings=WriteSettings(image_size=None), progress=False,
                          engine=engine, address=ray_head if engine == "ray" else None)
        errors[engine] = str(e.value)
    assert errors["ray"] == errors["local"] and src.shards[-1].name in errors["ray"]
    assert "\n" not in errors["ray"] and not (tmp_path / "ray" / "manifest.json").exists()


@pytest.mark.tensorflow
def test_rlds_convert_on_ray_equals_local(ray_head, tmp_path):
    """An RLDS build (RT-1 schema, TFRecord): each Ray task opens the tfds build itself; same bytes as local."""
    from data.openx import build_rt1_like

    build_rt1_like(tmp_path / "tfds", episodes=4, steps=5, seed=1)
    spec = SourceSpec(str(CARDS / "fractal20220817_data.md"), "rlds", root=str(tmp_path / "tfds"))
    settings = WriteSettings(image_size=None, shard_bytes=300_000)
    local = write_dataset(spec, tmp_path / "local", workers=2, settings=settings, progress=False)
    ray_ds = write_dataset(spec, tmp_path / "ray", workers=2, settings=settings, progress=False, engine="ray", address=ray_head)
    assert tree(ray_ds.root) == tree(local.root) and ray_ds.episodes == 4


# ----------------------------------------------------------------------------------------- refused up front
def test_unreachable_address_is_one_line_in_bounded_time(tmp_path, monkeypatch, capsys):
    card, root = _lerobot_source(tmp_path)
    address = f"127.0.0.1:{_free_ports(1)[0]}"  # nothing listens there
    start = time.time()
    code, _, err = run_cli(monkeypatch, capsys, "data", "convert", card, "--source", root, "-o", tmp_path / "out",
                           "--engine", "ray", "--address", address)
    assert time.time() - start < CONNECT_TIMEOUT_S + 10
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--address {address}: no Ray cluster answers there" in err and "ray start --head" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_port_that_is_not_ray_is_refused_in_bounded_time():
    """Something accepts connections there but never speaks Ray's protocol (ray.init alone would wait for ever):
    refused within the join bound (shortened here; `uact` waits JOIN_TIMEOUT_S)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.time()
        with pytest.raises(DataError, match=rf"--address {address}: something answers there, but no Ray cluster could be joined within 3 s"):
            check_address(address, join_timeout_s=3)
        assert time.time() - start < 3 + 5


@pytest.mark.parametrize("args,message", [
    (["--engine", "rey"], "--engine: 'rey' (did you mean 'ray'?)"),
    (["--address", "127.0.0.1:6379"], "only --engine ray joins a cluster"),
    (["--engine", "ray", "--address", "head-node"], "expected HOST:PORT"),
])
def test_bad_engine_options_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    card, root = _lerobot_source(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "data", "convert", card, "--source", root, "-o", tmp_path / "out", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_engine_ray_without_ray_names_the_extra(tmp_path):
    """Where Ray is not installed (`import ray` fails), --engine ray is one line naming the extra to install."""
    card, root = _lerobot_source(tmp_path)
    code = ("import sys; sys.modules['ray'] = None; from unified_action.cli import main; "  # None: `import ray` raises
            f"sys.argv = ['uact', 'data', 'convert', {str(card)!r}, '--source', {str(root)!r}, '-o', {str(tmp_path / 'out')!r}, "
            "'--engine', 'ray']; main()")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "pip install 'unified-action[scale]'" in run.stderr
    assert not (tmp_path / "out").exists()
