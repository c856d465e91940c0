"""Offline genome-wide prediction: tiling, resumable shards, merge to one BigWig per cell type.

>>> from epiformer.inference.settings import InferenceSettings, ModelSetOptions
>>> from epiformer.precompute import precompute
>>> precompute(ModelSetOptions(("model.pth.tar",)), "genome.fa", "precomputed",
...            InferenceSettings(conservation="phastCons.bw"))
"""
from epiformer.precompute.job import PrecomputeOptions, precompute
from epiformer.precompute.merge import merge_tracks, merged_files
from epiformer.precompute.plan import PrecomputeError, TilePlan, plan_tiles

__all__ = ["PrecomputeError", "PrecomputeOptions", "TilePlan", "merge_tracks", "merged_files", "plan_tiles", "precompute",
]
