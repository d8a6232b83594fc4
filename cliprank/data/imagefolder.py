"""`imagefolder:PATH` — a user's own images, one sub-folder per class.

Layouts (class folders sorted by name give the labels; images are found recursively):

    PATH/<class>/<image>                 flat: a single split, called `test`
    PATH/{train,val,test}/<class>/...    split: only the requested split is read; labels come from
                                         the union of class folders over all splits, so they agree

Optional text files in PATH, one entry per line: `classnames.txt` (the class names, in the sorted
order of the class folders; default: folder names with `_` read as spaces) and `templates.txt`
(prompt templates with `{c}` or `{}`; default: OpenAI's 80 ImageNet templates, the same fallback
CLIP_benchmark uses for a dataset it has no templates for).
"""

from __future__ import annotations

from pathlib import Path

from cliprank.data import metadata
from cliprank.data.items import DatasetParts, FileImages
from cliprank.errors import CliprankError

PREFIX = "imagefolder:"
SPLIT_FOLDERS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def scan_class_folders(folder: Path, root: Path, classes: list[str] | None = None) -> tuple[list[str], FileImages]:
    """Class folder names of `folder` (or the given `classes`, some maybe absent) and its images."""
    classes = classes if classes is not None else [p.name for p in _visible_dirs(folder)]
    pairs = [(path, label) for label, name in enumerate(classes) for path in _images_in(folder / name)]
    return classes, FileImages.from_pairs(root, pairs)


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _layout(path: Path, split: str) -> tuple[Path, list[str]]:
    """The folder holding `split`'s class folders, and the class folder names shared by all splits."""
    subfolders = _visible_dirs(path)
    if not subfolders:
        raise CliprankError(f"{path} has no class sub-folders; expected {path}/<class name>/<image files>")
    split_dirs = [p for p in subfolders if p.name in SPLIT_FOLDERS]
    if len(split_dirs) == len(subfolders):
        if split not in {p.name for p in split_dirs}:
            present = ", ".join(p.name for p in split_dirs)
            raise CliprankError(f"{path} has no '{split}' split folder (found: {present})")
        classes = sorted({c.name for d in split_dirs for c in _visible_dirs(d)})
        return path / split, classes
    if split != "test":
        raise CliprankError(
            f"{path} holds class folders directly, which is one split called 'test'; for a '{split}' split "
            f"arrange it as {path}/{{train,val,test}}/<class name>/<image files>"
        )
    return path, [p.name for p in subfolders]


def build(path_text: str, split: str) -> tuple[str, DatasetParts]:
    """The canonical name (`imagefolder:` + absolute path) and the dataset at `path_text`."""
    path = Path(path_text).expanduser()
    if not path_text or not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise CliprankError(f"imagefolder path '{path_text}' {what}; use imagefolder:PATH with PATH/<class>/<images>")
    path = path.resolve()
    folder, classes = _layout(path, split)
    classes, source = scan_class_folders(folder, folder, classes)
    if len(source) == 0:
        suffixes = " ".join(IMAGE_SUFFIXES)
        raise CliprankError(f"no images under {folder}/<class name>/ (looked for {suffixes})")

    classnames = _read_lines(path / "classnames.txt")
    if classnames is not None and len(classnames) != len(classes):
        raise CliprankError(
            f"{path / 'classnames.txt'} has {len(classnames)} names but there are {len(classes)} class folders "
            f"({', '.join(classes[:5])}{', …' if len(classes) > 5 else ''}); give one name per folder, in sorted order"
        )
    templates = _read_lines(path / "templates.txt")
    if templates == []:
        example = "a photo of a {c}."
        raise CliprankError(f"{path / 'templates.txt'} is empty; write one template per line, e.g. '{example}'")
    origin = [
        "classnames.txt" if classnames is not None else "folder names",
        "templates.txt" if templates is not None else "OpenAI ImageNet templates (open_clip)",
    ]
    parts = DatasetParts(
        source=source,
        classnames=classnames if classnames is not None else [metadata.clean_classname(c) for c in classes],
        templates=[metadata.normalise_template(t) for t in templates] if templates else metadata.imagenet_templates(),
        description=f"image folder {path}, split '{split}': {len(source)} images in {len(classes)} classes",
        prompt_source=" + ".join(origin),
    )
    return f"{PREFIX}{path}", parts
