"""What methods need beyond their knobs — rankings, a predictor, learned tokens — found and loaded once per model.

Each kind comes from the files the user gave or, for the embedded model when none are given, from
those it ships; each is checked against the model's fingerprint when loaded. Which kinds are loaded
follows from what the methods declare (`requires`), never from their names: what a method requires
must be found; rankings are loaded whenever there are some (every ranking is judged against them);
a file the user gives is always loaded, and so checked; and for `--method all` everything that can
be found is loaded — it decides which methods `all` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.registry import is_all, method_class
from cliprank.methods.spec import MethodSpec
from cliprank.models import embedded
from cliprank.models.loading import LoadedModel
from cliprank.predictor.io import load_predictor
from cliprank.search.store import RankingIndex
from cliprank.tokens.io import load_tokens


@dataclass(frozen=True)
class ResourceFiles:
    """The files a user named on the command line (or in a recipe)."""

    rankings: tuple[Path, ...] = ()
    predictor: Path | None = None
    tokens: Path | None = None

    def given(self, kind: str) -> list[Path]:
        value = getattr(self, kind)
        return list(value) if isinstance(value, tuple) else [] if value is None else [value]


@dataclass(frozen=True)
class Source:
    """Where one kind of resource comes from when not given, how it loads, and what it is called."""

    shipped: Callable[[], list[Path]]  # the embedded model's own files (none when absent)
    load: Callable[[list[Path], LoadedModel], Any]
    wanted: str  # what is missing, and how to get it


SOURCES: dict[str, Source] = {
    "rankings": Source(
        lambda: [embedded.rankings_dir()] if embedded.has_rankings() else [],
        lambda paths, model: RankingIndex(paths, model.fingerprint),
        "stored rankings: run `cliprank search`, then pass --rankings FILE_OR_DIR",
    ),
    "predictor": Source(
        lambda: [embedded.predictor_path()] if embedded.has_predictor() else [],
        lambda paths, model: load_predictor(paths[0], model),
        "a trained predictor: pass --predictor FILE (see `cliprank train-predictor`)",
    ),
    "tokens": Source(
        lambda: [embedded.tokens_dir()] if embedded.has_tokens() else [],
        lambda paths, model: load_tokens(paths[0], model),
        "learned tokens: pass --tokens FILE (see `cliprank add-tokens`)",
    ),
}


def load_resources(
    model: LoadedModel, specs: Sequence[MethodSpec], files: ResourceFiles = ResourceFiles()
) -> Resources:
    """The resources for running `specs` on `model` (see the module's docstring for which are loaded)."""
    users: dict[str, list[str]] = {kind: [] for kind in SOURCES}
    if is_all(specs):
        wanted = set(SOURCES)
    else:
        for name, _ in specs:
            for kind in method_class(name).requires:
                users[kind].append(name)
        wanted = {kind for kind, names in users.items() if names} | {"rankings"}
        wanted |= {kind for kind in SOURCES if files.given(kind)}
    resources = Resources()
    for kind, source in SOURCES.items():
        if kind not in wanted:
            continue
        paths = files.given(kind) or (source.shipped() if model.pretrained == embedded.TAG else [])
        if paths:
            loaded = source.load(paths, model)
            if users[kind] and not loaded:  # rankings files that are all another model's
                needs = "needs" if len(users[kind]) == 1 else "need"
                raise CliprankError(
                    f"{', '.join(dict.fromkeys(users[kind]))} {needs} rankings of this model ({model.label}): "
                    f"{loaded.why_empty()}; run `cliprank search` with this model"
                )
            setattr(resources, kind, loaded)
        elif users[kind]:
            needs = "needs" if len(users[kind]) == 1 else "need"
            raise CliprankError(f"{', '.join(dict.fromkeys(users[kind]))} {needs} {source.wanted}")
    return resources
