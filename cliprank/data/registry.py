"""Dataset names to evaluable datasets: one entry point for every source of images.

Names are the embedded sets (`digits`, `textiles`, `faces`), CLIP_benchmark's names (`torchvision_sets`)
and the prefix form `imagefolder:PATH`, in the manner of open_clip's `hf-hub:` prefixes. Each name maps
to a small builder; `load_dataset` adds what is common to all: the subset for `limit`, the transform,
the fingerprint, leaving unreadable image files out when asked.

Names are checked (`check_dataset_name`) and listed without importing torch or torchvision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from cliprank.data import imagefolder, torchvision_sets
from cliprank.data.embedded import dataset as embedded
from cliprank.data.embedded.compose import EMBEDDED
from cliprank.data.items import DatasetParts, FileImages, Transform, ZeroShotDataset, assemble
from cliprank.errors import CliprankError

Builder = Callable[[str, Path, bool], DatasetParts]  # (split, dataset root, download) -> parts


def _embedded(name: str) -> Builder:
    return lambda split, root, download: embedded.build(name, split)


def _benchmark(name: str) -> Builder:
    return lambda split, root, download: torchvision_sets.build(name, split, root, download)


BUILDERS: dict[str, Builder] = {
    **{name: _embedded(name) for name in EMBEDDED},
    **{name: _benchmark(name) for name in torchvision_sets.TABLE},
}
PREFIXES: dict[str, Callable[[str, str], tuple[str, DatasetParts]]] = {imagefolder.PREFIX: imagefolder.build}


def default_root() -> Path:
    """Where CLIP_benchmark datasets are looked for (and downloaded to) without `--dataset-root`."""
    return embedded.cache_root() / "datasets"


def list_datasets() -> list[str]:
    """Every dataset name `load_dataset` accepts, besides the `imagefolder:PATH` form."""
    return list(BUILDERS)


def catalog() -> dict[str, str]:
    """One line per name (and per prefix form) for listings."""
    lines = {name: spec.description for name, spec in EMBEDDED.items()}
    lines.update({name: entry.title for name, entry in torchvision_sets.TABLE.items()})
    lines[f"{imagefolder.PREFIX}PATH"] = "your own images: PATH/<class>/<images>, or PATH/{train,val,test}/<class>/"
    return lines


def check_dataset_name(name: str) -> None:
    """Refuse a name no builder or prefix accepts (the data itself is only looked at when loaded)."""
    if any(name.strip().startswith(prefix) for prefix in PREFIXES) or name.strip().lower() in BUILDERS:
        return
    choices = ", ".join([*list_datasets(), f"{imagefolder.PREFIX}PATH"])
    raise CliprankError(f"unknown dataset '{name}'; use one of: {choices}")


def _parts(name: str, split: str, root: Path | None, download: bool) -> tuple[str, DatasetParts]:
    for prefix, build in PREFIXES.items():
        if name.startswith(prefix):
            return build(name[len(prefix) :], split)
    check_dataset_name(name)
    canonical = name.lower()
    root = (Path(root).expanduser() if root is not None else default_root()).resolve()
    return canonical, BUILDERS[canonical](split, root, download)


def load_dataset(
    name: str,
    split: str = "test",
    root: Path | None = None,
    transform: Transform | None = None,
    limit: int | None = None,
    download: bool = False,
    skip_unreadable: bool = False,
) -> ZeroShotDataset:
    """The dataset `name` (see `catalog()`), split `split`, ready to iterate as (image, label, index).

    `root` is where CLIP_benchmark datasets live (`--dataset-root`; default `<cache>/datasets`);
    `download` lets torchvision fetch a missing one. `limit` keeps a deterministic class-balanced
    subset of that many images, still indexed by their position in the full split. `transform` maps
    the RGB PIL image (e.g. open_clip's preprocess); without it items hold the PIL image.
    `skip_unreadable` decodes every image file once and leaves out those that fail (named in the
    dataset's `skipped` and fingerprint); without it, the first unreadable image stops the run.
    """
    if limit is not None and limit < 1:
        raise CliprankError(f"limit must be a positive number of images, not {limit}")
    canonical, parts = _parts(name.strip(), split, root, download)
    if skip_unreadable and isinstance(parts.source, FileImages):
        source = parts.source.without_unreadable()
        if source.skipped:
            description = f"{parts.description}; {len(source.skipped)} unreadable image files skipped"
            parts = dataclasses.replace(parts, source=source, description=description)
    try:
        return assemble(canonical, split, parts, transform, limit)
    except FileNotFoundError as err:
        raise CliprankError(f"dataset '{canonical}' is incomplete: {err.filename} is listed but missing") from err
