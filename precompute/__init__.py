"""Offline genome-wide prediction: tiling, resumable shards, merge to one BigWig per cell type."""
