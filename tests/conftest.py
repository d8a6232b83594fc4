"""Shared fixtures: offline, CPU, a private cache, and small models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's cache (datasets, classifiers, features)."""
    if "CLIPRANK_TEST_SHARED_CACHE" not in os.environ:
        os.environ["CLIPRANK_CACHE"] = str(tmp_path_factory.mktemp("cliprank-cache"))


@pytest.fixture(scope="session")
def tiny():
    """cliprank-tiny with random weights: 64 patches, 6 blocks, fast."""
    from cliprank.models import load_model

    return load_model("cliprank-tiny", "none")


@pytest.fixture(scope="session")
def tiny_images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
