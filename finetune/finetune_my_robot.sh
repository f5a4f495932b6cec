#!/usr/bin/env bash
# Fine-tune a pretrained unified-action world model on YOUR robot from a few episodes. Copy this file, edit the four
# variables, run it from the repository root. Every step resumes when re-run.
set -euo pipefail

CARD=data_cards/my_robot.md            # your robot's data card: cameras, action table, mapping onto the unified slots
PRETRAINED=runs/pretrain/tiny/export   # a pretrained export (uact pretrain ... or uact export RUN_DIR)
REGISTRY=runs/tokenizers               # the registry that export was trained with (its tokenizers are checked by hash)
K=${K:-10}                             # episodes to fine-tune on; a few more are recorded for evaluation
NAME=$(basename "$CARD" .md)

# 1. The card must validate before anything reads data with it.
uact card validate "$CARD"

# 2. Episodes as shards. A simulator card records them; real robots convert (LeRobot v3 or RLDS):
uact data record "$CARD" -o "runs/data/$NAME" -n $((K + 5)) --steps 160 --size 64
#   uact data convert "$CARD" --source /path/to/lerobot_or_rlds -o "runs/data/$NAME" --size 64

# 3. Fine-tune. The job registers your robot's tokenizer from the same first K episodes it trains on (existing ids
#    never change), trains LoRA adapters (or --set finetune.mode=adapter / full) and exports a plain model.
#    Only your robot matters? --set finetune.mode=full --set finetune.reset_output=true --set optim.lr=2e-3 measured
#    best on a new arm (benchmarks/README.md, few-shot): it starts at copy-last, not at the pretrained scenes' motion.
#    Start from finetune/configs/tiny_metaworld.yaml: copy it, or override its fields here.
uact finetune --config finetune/configs/tiny_metaworld.yaml \
  --set name="$NAME" --set out="runs/finetune/$NAME" \
  --set finetune.init_from="$PRETRAINED" --set finetune.episodes="$K" \
  --set data.registry="$REGISTRY" --set "data.datasets=[{path: runs/data/$NAME}]"

# 4. Evaluate the fine-tuned export on the episodes it did not train on (uact eval: rollouts vs. ground truth).
uact eval --model "runs/finetune/$NAME/export" --data "runs/data/$NAME" --registry "$REGISTRY" \
  --episodes "$K:$((K + 5))" --out "runs/eval/$NAME"
