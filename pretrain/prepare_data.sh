#!/usr/bin/env bash
# Record the three small datasets of pretrain/configs/tiny.yaml from real simulators and register their
# tokenizers into runs/tokenizers (re-running resumes: finished shards and registrations are kept).
set -euo pipefail
EPISODES=${EPISODES:-12}
STEPS=${STEPS:-120}
for card in gym_pusht ale_pong carracing; do
  uact data record "data_cards/${card}.md" -o "runs/data/${card}" -n "$EPISODES" --steps "$STEPS" --size 64
  if ! uact tokenizer list --registry runs/tokenizers 2>/dev/null | grep -q "\b${card}\b"; then
    uact tokenizer register "runs/data/${card}/${card}.md" --data "runs/data/${card}" --registry runs/tokenizers
  fi
done
