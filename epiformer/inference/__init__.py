"""Inference: settings, the device, the engine and its window rule, incremental variant windows, the
prediction cache, runners, and predicted tracks of regions."""
