"""Interpretation: per-base contributions and mutagenesis tracks of regions, written beside the
precomputed tracks."""
