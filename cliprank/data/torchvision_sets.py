"""CLIP_benchmark's datasets by name, read through torchvision (and three plain folder layouts).

Every name is one row of TABLE: which split of the source each cliprank split reads, how to open it,
the layout expected under `--dataset-root`, and where to get the data when `--download` cannot.
Splits follow CLIP_benchmark: `test` is what it evaluates (torchvision's test split; ImageNet's
`val`; all images for caltech101, sun397 and eurosat, which have no predefined split); `train`
(and `val` where the dataset defines one) feed the search and training steps.

torchvision is used to download, to check that files exist and to parse annotation files; images are
then read by path (or from arrays), sorted by path, so item positions do not depend on the
filesystem's listing order. Class names and templates: see `metadata`. Where CLIP_benchmark has no
curated names it uses torchvision's own, cleaned only for food101 and sun397; cliprank does the same
so its numbers stay comparable with the harness's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cliprank.data import metadata
from cliprank.data.imagefolder import scan_class_folders
from cliprank.data.items import ArrayImages, DatasetParts, FileImages, ImageSource
from cliprank.errors import CliprankError
from cliprank.io import reason


def tvd() -> ModuleType:
    """torchvision's datasets, imported on first use: it loads torch, and the names are listed without it."""
    import torchvision.datasets  # torchvision's datasets load slowly; `cliprank datasets` lists without them

    return torchvision.datasets


Opener = Callable[[Path, str | None, bool], tuple[ImageSource, list[str] | None]]  # (root, split, download)


def _file_items(dataset: Any, root: Path) -> ImageSource:
    """(path, label) pairs from whichever attributes this torchvision class keeps them in."""
    for attribute in ("samples", "_samples"):
        if hasattr(dataset, attribute):
            return FileImages.from_pairs(root, list(getattr(dataset, attribute)))
    files = getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
    if files is None or not hasattr(dataset, "_labels"):
        kind = type(dataset).__name__
        raise CliprankError(f"cliprank cannot read the file list of torchvision's {kind} in this torchvision version")
    return FileImages.from_pairs(root, list(zip(files, dataset._labels, strict=True)))


def _array_items(dataset: Any, root: Path) -> ImageSource:
    """In-memory datasets (CIFAR, MNIST, STL-10) as HWC/HW uint8 arrays."""
    images = np.asarray(dataset.data, dtype=np.uint8)
    if images.ndim == 4 and images.shape[1] == 3:  # STL-10 is stored channels-first
        images = images.transpose(0, 2, 3, 1)
    labels = dataset.targets if hasattr(dataset, "targets") else dataset.labels
    return ArrayImages(np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64))


def _torchvision(
    make: Callable[[str, str | None, bool], Any], items: Callable[[Any, Path], ImageSource] = _file_items
) -> Opener:
    """An opener that builds the torchvision dataset (downloading if asked) and takes its items."""

    def open_split(root: Path, split: str | None, download: bool) -> tuple[ImageSource, list[str] | None]:
        dataset = make(str(root), split, download)
        return items(dataset, root), getattr(dataset, "classes", None)

    return open_split


def _caltech101(root: Path, split: str | None, download: bool) -> tuple[ImageSource, list[str] | None]:
    """All 102 folders, BACKGROUND_Google included, as CLIP_benchmark does (torchvision drops it)."""
    folder = root / "caltech101" / "101_ObjectCategories"
    if download and not folder.is_dir():
        tvd().Caltech101(str(root), download=True)
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    classes, source = scan_class_folders(folder, root)
    return source, classes


def _imagenet(root: Path, split: str | None, download: bool) -> tuple[ImageSource, list[str] | None]:
    """`root/<split>/<wnid>/*.JPEG` (or under `root/imagenet/`); torchvision unpacks the archives into it."""
    candidates = [root / split, root / "imagenet" / split]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None and (root / "ILSVRC2012_devkit_t12.tar.gz").is_file():
        tvd().ImageNet(str(root), split=split)  # parses the devkit and unpacks ILSVRC2012_img_<split>.tar
        folder = root / split
    if folder is None:
        raise FileNotFoundError(candidates[0])
    classes, source = scan_class_folders(folder, root)
    if len(classes) != 1000:
        raise CliprankError(f"{folder} has {len(classes)} class folders; ImageNet-1k needs the 1000 <wnid> folders")
    return source, classes


def _ucf101(root: Path, split: str | None, download: bool) -> tuple[ImageSource, list[str] | None]:
    """CoOp's UCF101 mid-frames: `ucf101/UCF-101-midframes/<Class_Name>/*.jpg` + `split_zhou_UCF101.json`."""
    base = root / "ucf101" if (root / "ucf101").is_dir() else root
    frames, split_file = base / "UCF-101-midframes", base / "split_zhou_UCF101.json"
    if not (frames.is_dir() and split_file.is_file()):
        raise FileNotFoundError(split_file)
    rows = json.loads(split_file.read_text(encoding="utf-8"))[split]
    names = {int(label): classname for _, label, classname in rows}
    if sorted(names) != list(range(len(names))):
        raise CliprankError(f"{split_file}: the '{split}' split does not cover labels 0..{len(names) - 1}")
    source = FileImages.from_pairs(base, [(f"UCF-101-midframes/{path}", int(label)) for path, label, _ in rows])
    return source, [names[i] for i in range(len(names))]


def _same(name: str) -> str:
    return name


@dataclass(frozen=True)
class BenchmarkSet:
    """One dataset name: where its data lives, how to open it, how to prompt it."""

    title: str
    layout: str  # what must exist under the dataset root
    get: str  # where the data comes from
    splits: dict[str, str | None]  # cliprank split -> the source's split (None: the whole dataset)
    open: Opener
    clean: Callable[[str], str] = _same  # applied to the source's class names when no curated ones exist
    classnames: Callable[[], list[str]] | None = None  # fixed names instead of CLIP_benchmark's
    templates: Callable[[], list[str]] | None = None  # fixed templates instead of CLIP_benchmark's
    prompt_source: str = ""  # credit for fixed names/templates
    downloadable: bool = True


def _split_kw(kind: str) -> Opener:
    """For torchvision classes taking `split=`."""
    return _torchvision(lambda root, split, download: getattr(tvd(), kind)(root, split=split, download=download))


def _train_flag(kind: str) -> Opener:
    """For in-memory torchvision classes taking `train=True/False`."""
    return _torchvision(
        lambda root, split, download: getattr(tvd(), kind)(root, train=split == "train", download=download),
        _array_items,
    )


TABLE: dict[str, BenchmarkSet] = {
    "caltech101": BenchmarkSet(
        "Caltech-101, background class included",
        "caltech101/101_ObjectCategories/<class>/*.jpg",
        "https://data.caltech.edu/records/mzrjq-6wc02",
        {"test": None},
        _caltech101,
    ),
    "pets": BenchmarkSet(
        "Oxford-IIIT Pet",
        "oxford-iiit-pet/{images,annotations}",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        {"test": "test", "train": "trainval"},
        _split_kw("OxfordIIITPet"),
    ),
    "flowers": BenchmarkSet(
        "Oxford Flowers-102",
        "flowers-102/{jpg,imagelabels.mat,setid.mat}",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        {"test": "test", "train": "train", "val": "val"},
        _split_kw("Flowers102"),
    ),
    "food101": BenchmarkSet(
        "Food-101",
        "food-101/{images,meta}",
        "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        {"test": "test", "train": "train"},
        _split_kw("Food101"),
        clean=lambda name: name.replace("_", " "),
    ),
    "fgvc_aircraft": BenchmarkSet(
        "FGVC-Aircraft (variants)",
        "fgvc-aircraft-2013b/data/{images,variants.txt,images_variant_test.txt}",
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        {"test": "test", "train": "train", "val": "val"},
        _torchvision(lambda r, s, d: tvd().FGVCAircraft(r, split=s, annotation_level="variant", download=d)),
    ),
    "dtd": BenchmarkSet(
        "Describable Textures (partition 1)",
        "dtd/dtd/{images,labels}",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        {"test": "test", "train": "train", "val": "val"},
        _split_kw("DTD"),
    ),
    "ucf101": BenchmarkSet(
        "UCF101 middle frames, CoOp split",
        "ucf101/{UCF-101-midframes/<Class_Name>/*.jpg,split_zhou_UCF101.json}",
        "CoOp's DATASETS.md (github.com/KaiyangZhou/CoOp): UCF-101-midframes.zip and split_zhou_UCF101.json",
        {"test": "test", "train": "train", "val": "val"},
        _ucf101,
        clean=metadata.clean_classname,
        templates=lambda: ["a photo of a person doing {c}."],
        prompt_source="CoOp's UCF101 prompt",
        downloadable=False,
    ),
    "imagenet1k": BenchmarkSet(
        "ImageNet-1k",
        "val/<wnid>/*.JPEG (1000 folders; train/ for the train split), or ILSVRC2012_img_val.tar and "
        "ILSVRC2012_devkit_t12.tar.gz in that folder",
        "https://image-net.org/download-images.php (registration required)",
        {"test": "val", "train": "train"},
        _imagenet,
        classnames=metadata.imagenet_classnames,
        templates=metadata.imagenet_templates,
        prompt_source="open_clip (OpenAI ImageNet names and 80 templates)",
        downloadable=False,
    ),
    "cifar10": BenchmarkSet(
        "CIFAR-10",
        "cifar-10-batches-py/",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        {"test": "test", "train": "train"},
        _train_flag("CIFAR10"),
    ),
    "cifar100": BenchmarkSet(
        "CIFAR-100",
        "cifar-100-python/",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        {"test": "test", "train": "train"},
        _train_flag("CIFAR100"),
    ),
    "eurosat": BenchmarkSet(
        "EuroSAT RGB (all images)",
        "eurosat/2750/<class>/*.jpg",
        "https://github.com/phelber/EuroSAT",
        {"test": None},
        _torchvision(lambda r, s, d: tvd().EuroSAT(r, download=d)),
    ),
    "sun397": BenchmarkSet(
        "SUN397 (all images)",
        "SUN397/{ClassName.txt,<letter>/<class>/*.jpg}",
        "https://vision.princeton.edu/projects/2010/SUN/",
        {"test": None},
        _torchvision(lambda r, s, d: tvd().SUN397(r, download=d)),
        clean=lambda name: name.replace("_", " ").replace("/", " "),
    ),
    "cars": BenchmarkSet(
        "Stanford Cars",
        "stanford_cars/{devkit,cars_test,cars_test_annos_withlabels.mat}",
        "a mirror of Stanford Cars (torchvision's original URL is gone), e.g. Kaggle",
        {"test": "test", "train": "train"},
        _split_kw("StanfordCars"),
        downloadable=False,
    ),
    "stl10": BenchmarkSet(
        "STL-10",
        "stl10_binary/",
        "https://cs.stanford.edu/~acoates/stl10/",
        {"test": "test", "train": "train"},
        _torchvision(lambda r, s, d: tvd().STL10(r, split=s, download=d), _array_items),
    ),
    "mnist": BenchmarkSet(
        "MNIST",
        "MNIST/raw/",
        "http://yann.lecun.com/exdb/mnist/",
        {"test": "test", "train": "train"},
        _train_flag("MNIST"),
    ),
    "gtsrb": BenchmarkSet(
        "GTSRB",
        "gtsrb/{GTSRB/Final_Test/Images,GT-final_test.csv}",
        "https://benchmark.ini.rub.de/gtsrb_dataset.html",
        {"test": "test", "train": "train"},
        _split_kw("GTSRB"),
    ),
}


def _missing(name: str, entry: BenchmarkSet, root: Path, download: bool, err: BaseException) -> CliprankError:
    """One line: what is missing, where it was looked for, and how to get it."""
    if download and entry.downloadable:
        return CliprankError(
            f"could not download '{name}' ({entry.title}) into {root} ({reason(err)}); without internet, fetch it from "
            f"{entry.get} and unpack it as {root}/{entry.layout}, then pass --dataset-root {root}"
        )
    fetch = "add --download to fetch it (needs internet)"
    if not entry.downloadable:
        fetch = "get it by hand (it cannot be downloaded automatically)"
    return CliprankError(
        f"dataset '{name}' ({entry.title}) not found under {root}: expected {root}/{entry.layout}; "
        f"pass --dataset-root DIR holding that layout, or {fetch}; source: {entry.get}"
    )


def _names_and_templates(name: str, entry: BenchmarkSet, raw: list[str] | None) -> tuple[list[str], list[str], str]:
    if entry.templates is not None:
        names = entry.classnames() if entry.classnames else [entry.clean(c) for c in raw or []]
        return names, entry.templates(), entry.prompt_source
    curated = metadata.clip_benchmark_classnames(name)
    if curated is not None and raw is not None and len(raw) != len(curated):
        raise CliprankError(
            f"dataset '{name}' has {len(raw)} classes on disk but CLIP_benchmark names {len(curated)}; "
            "the data does not match the expected version"
        )
    names = curated if curated is not None else [entry.clean(c) for c in raw or []]
    return names, metadata.clip_benchmark_templates(name), metadata.clip_benchmark_source()


def build(name: str, split: str, root: Path, download: bool) -> DatasetParts:
    entry = TABLE[name]
    if split not in entry.splits:
        raise CliprankError(f"dataset '{name}' has no split '{split}'; use one of {', '.join(entry.splits)}")
    if entry.templates is None:
        metadata.clip_benchmark_source()  # fail on missing prompts before any long download
    source_split = entry.splits[split]
    try:
        source, raw = entry.open(root, source_split, download and entry.downloadable)
    except (RuntimeError, OSError, ValueError) as err:
        raise _missing(name, entry, root, download, err) from err
    classnames, templates, prompt_source = _names_and_templates(name, entry, raw)
    if len(source) and int(source.labels.max()) >= len(classnames):
        raise CliprankError(
            f"dataset '{name}' under {root} has labels up to {int(source.labels.max())} but {len(classnames)} class "
            "names; the data does not match the expected version"
        )
    read = f"torchvision split '{source_split}'" if source_split else "all images (no predefined split)"
    return DatasetParts(
        source=source,
        classnames=classnames,
        templates=templates,
        description=f"{entry.title}, {read}: {len(source)} images, {len(classnames)} classes, from {root}",
        prompt_source=prompt_source,
    )
