"""DeepSpeed pretraining of the world model: configs, the loop, checkpoints, export."""
