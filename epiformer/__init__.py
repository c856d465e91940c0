"""Epiformer: chromatin accessibility per cell type at 128 bp resolution from DNA sequence."""
__version__ = "0.1.0"

from epiformer.genome.reader import Genome, GenomeError  # noqa: E402
from epiformer.model.checkpoints import CheckpointError, load_model, save_checkpoint  # noqa: E402
from epiformer.model.config import ModelConfig, preset  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402

__all__ = ["CheckpointError", "Epiformer", "Genome", "GenomeError", "ModelConfig",
           "load_model", "preset", "save_checkpoint", "__version__"]
