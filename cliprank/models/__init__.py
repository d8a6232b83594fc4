"""Loading open_clip models (any source), their vision-tower adapters and shape facts, fingerprints, and the
embedded default."""

from cliprank.models.arch import VisionArch
from cliprank.models.loading import LoadedModel, load_model
from cliprank.models.towers import describe

__all__ = ["LoadedModel", "VisionArch", "describe", "load_model"]
