#!/usr/bin/env bash
# Multi-node pretraining through DeepSpeed's launcher (ssh to every host of the hostfile).
#   pretrain/launch_multinode.sh CONFIG [uact pretrain options...]
#   HOSTFILE=pretrain/hostfile DS_JSON=pretrain/ds/zero2.json pretrain/launch_multinode.sh pretrain/configs/large.yaml
# The DeepSpeed JSON can also be chosen with `--set train.deepspeed=...`. Resuming is automatic: re-run the
# same command after a failure, with the same number of GPUs in total.
set -euo pipefail
CONFIG=${1:?usage: pretrain/launch_multinode.sh CONFIG [options]}
shift
HOSTFILE=${HOSTFILE:-pretrain/hostfile}
EXTRA=()
if [[ -n "${DS_JSON:-}" ]]; then EXTRA+=(--set "train.deepspeed=${DS_JSON}"); fi
# --no_local_rank: our entry point reads LOCAL_RANK from the environment, not from an argument.
exec deepspeed --hostfile "$HOSTFILE" --no_local_rank ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"} \
  pretrain/train.py --config "$CONFIG" "${EXTRA[@]}" "$@"
