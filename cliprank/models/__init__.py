"""Loading open_clip ViTs (any source), their shape facts, fingerprints, and the embedded default."""

from cliprank.models.arch import VisionArch, describe
from cliprank.models.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "VisionArch", "describe", "load_model"]
