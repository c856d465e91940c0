"""Variants: alleles and the reference check, VCF reading, effect scores, the scorer, the
score-variants job, calibration and saturation mutagenesis."""
