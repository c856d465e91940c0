"""UCSC / IGV track hubs from a precompute folder: hub text files, the genome as .2bit, IGV sessions,
and SHA256SUMS with the files' ETags.

>>> from epiformer.trackhub import HubOptions, build_hub
>>> build_hub("precomputed", "hub", HubOptions(email="me@example.org"))
"""
from epiformer.trackhub.annotation import AnnotationError, write_annotation_bigbed
from epiformer.trackhub.checksums import SUMS_FILE, file_etag, hub_etags
from epiformer.trackhub.hub import UCSC_GENOMES, HubError, HubOptions, annotation_source, build_hub
from epiformer.trackhub.twobit import write_twobit

__all__ = ["SUMS_FILE", "UCSC_GENOMES", "AnnotationError", "HubError", "HubOptions", "annotation_source", "build_hub",
           "file_etag", "hub_etags", "write_annotation_bigbed", "write_twobit"]
