"""Genomes: sequence and conservation files, the model's encoding of DNA, chromosome names,
intervals and the targets table."""
