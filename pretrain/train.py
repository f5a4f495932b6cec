"""Entry point for launchers that start a script in every process (DeepSpeed's, SLURM's srun).

Same options as `uact pretrain` (without --nproc: the launcher makes the processes), e.g.
    deepspeed --hostfile pretrain/hostfile --no_local_rank pretrain/train.py --config pretrain/configs/large.yaml
"""

import sys

from unified_action.cli import main

if __name__ == "__main__":
    sys.argv = ["uact", "pretrain", *sys.argv[1:]]
    main()
