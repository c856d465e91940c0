"""UCSC / IGV track hubs from a precompute folder: hub text files, the genome as .2bit, IGV sessions.

>>> from trackhub import HubOptions, build_hub
>>> build_hub("precomputed", "hub", HubOptions(email="me@example.org"))
"""
from .hub import UCSC_GENOMES, HubError, HubOptions, build_hub
from .twobit import write_twobit

__all__ = ["UCSC_GENOMES", "HubError", "HubOptions", "build_hub", "write_twobit"]
