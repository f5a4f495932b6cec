"""`python -m unified_action.cli`: what torchrun and DeepSpeed's launcher start in each process."""

from unified_action.cli import main

main()
