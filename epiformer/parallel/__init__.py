"""Many processes: torchrun's process group for training, and the skeleton of sharded, resumable
offline jobs."""
