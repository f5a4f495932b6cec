"""Process groups: one process with no launcher, N local processes through torchrun, many nodes through DeepSpeed.

- No launcher: DeepSpeed looks for MPI unless the torch.distributed variables are set, so a single process
  sets RANK=0, WORLD_SIZE=1 and a free local port itself.
- `--nproc N`: the command re-executes itself under `python -m torch.distributed.run --standalone`, which
  sets the variables for each of the N processes (and OMP_NUM_THREADS=1, so N processes share the cores).
- Multi-node: `deepspeed --hostfile ... --no_local_rank pretrain/train.py ...` (pretrain/launch_multinode.sh)
  sets them across machines; nothing here changes.
Backend: NCCL on GPUs, gloo on CPU (DeepSpeed's CPU accelerator would otherwise want oneCCL).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch

from unified_action.processes import parent_death_signal


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> DistInfo:
    """Join (or, alone, create) the process group and pick this process's device."""
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:  # no launcher: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `uact <argv>` in `nproc` local processes under torchrun; returns its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "unified_action.cli", *argv]
    env = dict(os.environ, LOCAL_SIZE=str(nproc))  # DeepSpeed's CPU accelerator counts local ranks from it
    # the cores shared out (torchrun would set 1 and print a warning saying so); a value the user set is kept
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # torchrun stops its workers on SIGTERM: sent when this process dies, however it dies
    return subprocess.call(cmd, env=env, preexec_fn=parent_death_signal)
