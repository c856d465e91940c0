"""Offline genome-wide prediction: tiling, resumable shards, merge to one BigWig per cell type.

>>> from precompute import PrecomputeOptions, precompute
>>> precompute(load_model_set(["model.pth.tar"]), "genome.fa", "phastCons.bw", "precomputed")
"""
from .job import PrecomputeOptions, precompute
from .merge import merge_tracks, merged_files
from .plan import PrecomputeError, TilePlan, plan_tiles

__all__ = ["PrecomputeError", "PrecomputeOptions", "TilePlan", "merge_tracks", "merged_files", "plan_tiles", "precompute",
]
