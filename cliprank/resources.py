"""What methods need beyond their knobs — rankings, a predictor, learned tokens — loaded once per model.

Each is checked against the model's fingerprint when loaded. For the embedded model, the shipped
rankings, predictor and tokens are used when none are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.registry import method_class
from cliprank.methods.spec import MethodSpec
from cliprank.models import embedded
from cliprank.models.loading import LoadedModel


def load_resources(
    model: LoadedModel,
    specs: Sequence[MethodSpec],
    rankings: Sequence[Path] = (),
    predictor: Path | None = None,
    tokens: Path | None = None,
) -> Resources:
    """Resources the methods in `specs` require (and rankings whenever available, for agreement)."""
    from cliprank.search.store import RankingIndex

    needed = {requirement for name, _ in specs for requirement in method_class(name).requires}
    is_embedded = model.pretrained == embedded.TAG
    resources = Resources()
    paths = list(rankings) or ([embedded.rankings_dir()] if is_embedded and embedded.has_rankings() else [])
    if paths:
        resources.rankings = RankingIndex(paths, model.fingerprint)
    elif "rankings" in needed:
        raise CliprankError("golden needs stored rankings: run `cliprank search`, then pass --rankings FILE_OR_DIR")
    if "predictor" in needed:
        from cliprank.predictor.io import default_predictor_path, load_predictor

        resources.predictor = load_predictor(predictor or default_predictor_path(model), model)
    if tokens is not None or "tokens" in needed:
        from cliprank.tokens.io import default_tokens_path, load_tokens

        resources.tokens = load_tokens(tokens or default_tokens_path(model), model)
    return resources
