"""The network: its configuration, its modules, checkpoints (the original's and ours) and model sets."""
