"""The embedded datasets as evaluable splits, composed once and cached on disk.

Composing an image costs milliseconds, so a split is composed once and kept as a compressed `.npz`
(uint8 images + int64 labels) under `<cache>/data/embedded/`. The file name carries a key derived
from CACHE_VERSION, the source of the composer modules and the numpy/Pillow versions, so any change
in how images are made rebuilds the split instead of serving stale pixels (files of older keys are
left alone: another checkout of other code may still be reading them). The archive is written
with fixed zip timestamps: rebuilding gives the same bytes, not only the same pixels.

Splits: `train` and `test` are the composer's own (disjoint source images). `val` is held out for
training steps that must not touch test (predictor, learnable tokens): a fifth as many images as
`train`, composed from the *train* sources on a separate random stream, so its compositions differ
from `train`'s while test stays untouched.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import PIL

from cliprank.data import metadata
from cliprank.data.embedded import compose, sources
from cliprank.data.embedded.compose import EMBEDDED, EmbeddedSpec
from cliprank.data.items import ArrayImages, DatasetParts
from cliprank.errors import CliprankError
from cliprank.io import atomic_write_bytes

CACHE_VERSION = "1"  # bump when the cache layout changes; composer edits are picked up by the key itself
SPLITS = ("train", "val", "test")
VAL_FRACTION = 5  # val has len(train) // VAL_FRACTION images
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def cache_root() -> Path:
    """cliprank's cache folder: `$CLIPRANK_CACHE`, else `~/.cache/cliprank`."""
    return Path(os.environ.get("CLIPRANK_CACHE") or Path.home() / ".cache" / "cliprank")


def composition_key() -> str:
    """Changes whenever the composed pixels could: cache version, composer code, numpy, Pillow."""
    digest = hashlib.sha256(f"{CACHE_VERSION} numpy {np.__version__} pillow {PIL.__version__}\n".encode())
    for module in (compose, sources):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def split_size(spec: EmbeddedSpec, split: str) -> int:
    if split == "val":
        return spec.sizes["train"] // VAL_FRACTION
    return spec.sizes[split]


def compose_image(spec: EmbeddedSpec, split: str, index: int) -> tuple[np.ndarray, int]:
    """Image `index` of `split` exactly as the cached split holds it."""
    if split == "val":
        return spec.image("train", index, stream_name="val")
    return spec.image(split, index)


def compose_split(spec: EmbeddedSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [compose_image(spec, split, i) for i in range(split_size(spec, split))]
    images = np.stack([pixels for pixels, _ in pairs])
    labels = np.asarray([label for _, label in pairs], dtype=np.int64)
    return images, labels


def cache_path(name: str, split: str) -> Path:
    return cache_root() / "data" / "embedded" / f"{name}-{split}-{composition_key()}.npz"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An `.npz` archive with fixed timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _read(path: Path, expected: int) -> ArrayImages | None:
    """The cached split, or None when it is missing, unreadable or the wrong size (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except Exception:  # a truncated or foreign file is rebuilt, never trusted
        return None
    if len(images) != expected or len(labels) != expected or images.dtype != np.uint8:
        return None
    return ArrayImages(images, labels)


def load_split(name: str, split: str) -> ArrayImages:
    """Split `split` of embedded dataset `name`, from the cache or composed (and cached) now."""
    spec = EMBEDDED[name]
    if split not in SPLITS:
        raise CliprankError(f"embedded dataset '{name}' has no split '{split}'; use one of {', '.join(SPLITS)}")
    path = cache_path(name, split)
    cached = _read(path, split_size(spec, split))
    if cached is not None:
        return cached
    images, labels = compose_split(spec, split)
    atomic_write_bytes(path, _npz_bytes({"images": images, "labels": labels}))
    return ArrayImages(images, labels)


def build(name: str, split: str) -> DatasetParts:
    spec = EMBEDDED[name]
    source = load_split(name, split)
    return DatasetParts(
        source=source,
        classnames=list(spec.classnames),
        templates=[metadata.normalise_template(t) for t in spec.templates],
        description=f"{spec.description}; embedded, split '{split}', {len(source)} images of "
        f"{compose.IMAGE_SIZE}x{compose.IMAGE_SIZE} px",
        prompt_source="cliprank embedded",
    )
