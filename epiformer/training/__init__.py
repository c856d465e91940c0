"""Training: HDF5 datasets (ours and the original's), the trainer (one process or torchrun), losses
and metrics."""
