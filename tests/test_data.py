"""The dataset layer: names to (image, label, index) items, prompts, fingerprints; offline and fast."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from cliprank.data import catalog, list_datasets, load_dataset, make_loader, metadata, preload
from cliprank.data.embedded import dataset as embedded
from cliprank.data.embedded import sources
from cliprank.data.embedded.compose import EMBEDDED
from cliprank.data.items import balanced_subset
from cliprank.errors import CliprankError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

needs_clip_benchmark = pytest.mark.skipif(
    not metadata.clip_benchmark_available(), reason=f"clip-benchmark not installed ({metadata.CLIP_BENCHMARK_INSTALL})"
)


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One cache for the module, so each embedded split is composed once; tests needing a fresh one override it."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("CLIPRANK_CACHE", str(path))
        yield path


def counting(function, calls: list):
    def wrapper(spec, split):
        calls.append((spec.name, split))
        return function(spec, split)

    return wrapper


def pixels(item) -> np.ndarray:
    return np.asarray(item[0])


def row_hashes(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha256(row.tobytes()).digest() for row in images}


# --- embedded datasets -------------------------------------------------------------------------------


def test_embedded_split_builds_to_the_same_bytes_in_fresh_caches(tmp_path, monkeypatch):
    fingerprints, files = [], []
    for run in ("first", "second"):
        monkeypatch.setenv("CLIPRANK_CACHE", str(tmp_path / run))
        fingerprints.append(load_dataset("faces").fingerprint)
        path = embedded.cache_path("faces", "test")
        assert path.is_relative_to(tmp_path / run)
        files.append(path.read_bytes())
    assert fingerprints[0] == fingerprints[1]
    assert files[0] == files[1]


def test_embedded_split_is_read_back_from_the_cache(monkeypatch):
    built = load_dataset("faces")
    monkeypatch.setattr(embedded, "compose_split", lambda *a: pytest.fail("composed again despite the cache"))
    again = load_dataset("faces")
    assert again.fingerprint == built.fingerprint
    assert embedded.cache_path("faces", "test").name.endswith(".npz")


def test_a_new_composition_version_rebuilds_the_split(monkeypatch):
    before = load_dataset("faces")
    old_path = embedded.cache_path("faces", "test")
    monkeypatch.setattr(embedded, "CACHE_VERSION", "bumped-for-test")
    new_path = embedded.cache_path("faces", "test")
    assert new_path != old_path and not new_path.exists()
    monkeypatch.setattr(embedded, "compose_split", counting(embedded.compose_split, calls := []))
    after = load_dataset("faces")
    assert new_path.is_file() and calls == [("faces", "test")]
    assert after.fingerprint == before.fingerprint  # same composer, same pixels


def test_a_corrupt_cache_file_is_rebuilt_not_trusted():
    good = load_dataset("faces").fingerprint
    embedded.cache_path("faces", "test").write_bytes(b"not an npz")
    assert load_dataset("faces").fingerprint == good


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_items_are_the_composed_images_with_full_split_indices(name):
    spec = EMBEDDED[name]
    ds = load_dataset(name, split="test")
    assert len(ds) == spec.sizes["test"]
    assert ds.classnames == list(spec.classnames)
    assert all("{c}" in t for t in ds.templates) and len(ds.templates) == len(spec.templates)
    for index in (0, 1, len(ds) - 1):
        image, label, position = ds.dataset[index]
        expected, expected_label = spec.image("test", index)
        assert position == index and label == expected_label
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)


def test_val_comes_from_the_train_sources_on_its_own_stream():
    spec = EMBEDDED["faces"]
    val = load_dataset("faces", split="val")
    assert len(val) == spec.sizes["train"] // 5
    for index in (0, len(val) - 1):
        expected, label = spec.image("train", index, stream_name="val")
        assert np.array_equal(pixels(val.dataset[index]), expected) and val.dataset[index][1] == label
    assert not np.array_equal(pixels(val.dataset[0]), spec.image("train", 0)[0])


def test_embedded_splits_draw_on_disjoint_sources():
    train_digits, test_digits = sources.mnist("train")[0], sources.mnist("test")[0]
    assert not row_hashes(train_digits) & row_hashes(test_digits)
    train_faces, test_faces = sources.faces("train")[0], sources.faces("test")[0]
    assert not row_hashes(train_faces) & row_hashes(test_faces)
    assert not row_hashes(np.stack(sources.textiles("train"))) & row_hashes(np.stack(sources.textiles("test")))
    assert not set(sources.PHOTOS["train"]) & set(sources.PHOTOS["test"])


def test_no_test_image_appears_in_train_or_val():
    test = row_hashes(embedded.load_split("faces", "test").images)
    for split in ("train", "val"):
        assert not test & row_hashes(embedded.load_split("faces", split).images)


def test_unknown_embedded_split_is_refused():
    with pytest.raises(CliprankError, match="no split 'holdout'.*train, val, test"):
        load_dataset("faces", split="holdout")


# --- limit ---------------------------------------------------------------------------------------------


def test_limit_is_deterministic_class_balanced_and_keeps_full_indices():
    full = load_dataset("digits")
    first, second = load_dataset("digits", limit=30), load_dataset("digits", limit=30)
    assert np.array_equal(first.indices, second.indices) and first.fingerprint == second.fingerprint
    assert first.fingerprint != full.fingerprint and len(first) == 30
    assert np.bincount(first.labels).tolist() == [3] * 10
    k = 7
    index = int(first.indices[k])
    assert first.dataset[k][2] == index and np.array_equal(pixels(first.dataset[k]), pixels(full.dataset[index]))
    assert set(load_dataset("digits", limit=10).indices) <= set(first.indices)
    assert load_dataset("digits", limit=10_000).fingerprint == full.fingerprint
    with pytest.raises(CliprankError, match="positive"):
        load_dataset("digits", limit=0)


def test_balanced_subset_spreads_over_classes_as_far_as_they_go():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 5)
    chosen = balanced_subset(labels, 9)
    assert np.bincount(labels[chosen], minlength=3).tolist() == [4, 2, 3]
    assert np.all(np.diff(chosen) > 0)


# --- image folders -------------------------------------------------------------------------------------


def make_folder(root, classes, per_class=2, size=8):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (40 * c, 10 * i, 0)).save(root / name / f"img{i}.png")
    return root


def test_imagefolder_reads_classes_names_and_templates(tmp_path):
    folder = make_folder(tmp_path / "set", ["b_cat", "a_dog"])
    (folder / "classnames.txt").write_text("dog\ncat\n")
    (folder / "templates.txt").write_text("a photo of a {}.\nart of the {c}.\n")
    ds = load_dataset(f"imagefolder:{folder}")
    assert ds.name == f"imagefolder:{folder.resolve()}" and ds.split == "test"
    assert ds.slug.startswith("imagefolder-set-") and "/" not in ds.slug
    assert ds.classnames == ["dog", "cat"] and ds.templates == ["a photo of a {c}.", "art of the {c}."]
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.prompts()[1] == ["a photo of a cat.", "art of the cat."]
    image, label, index = ds.dataset[2]
    assert image.size == (8, 8) and (label, index) == (1, 2)
    assert load_dataset(f"imagefolder:{folder}").fingerprint == ds.fingerprint
    Image.new("RGB", (8, 8)).save(folder / "a_dog" / "img9.png")
    assert load_dataset(f"imagefolder:{folder}").fingerprint != ds.fingerprint


def test_imagefolder_defaults_to_folder_names_and_openai_imagenet_templates(tmp_path):
    ds = load_dataset(f"imagefolder:{make_folder(tmp_path, ['golden_retriever', 'tabby'])}")
    assert ds.classnames == ["golden retriever", "tabby"]
    assert ds.templates == metadata.imagenet_templates() and len(ds.templates) == 80


def test_imagefolder_split_layout_shares_labels_across_splits(tmp_path):
    make_folder(tmp_path / "train", ["ant", "bee", "cow"])
    make_folder(tmp_path / "test", ["bee", "cow"])
    train, test = load_dataset(f"imagefolder:{tmp_path}", "train"), load_dataset(f"imagefolder:{tmp_path}")
    assert train.classnames == test.classnames == ["ant", "bee", "cow"]
    assert sorted(set(test.labels.tolist())) == [1, 2]
    with pytest.raises(CliprankError, match="no 'val' split"):
        load_dataset(f"imagefolder:{tmp_path}", "val")


def test_imagefolder_mistakes_are_one_clear_line(tmp_path):
    with pytest.raises(CliprankError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(CliprankError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(CliprankError, match="no images under"):
        load_dataset(f"imagefolder:{tmp_path}")
    flat = make_folder(tmp_path / "flat", ["x", "y"])
    with pytest.raises(CliprankError, match=r"one split called 'test'.*\{train,val,test\}"):
        load_dataset(f"imagefolder:{flat}", "train")
    (flat / "classnames.txt").write_text("only one\n")
    with pytest.raises(CliprankError, match="1 names but there are 2 class folders"):
        load_dataset(f"imagefolder:{flat}")


def test_unreadable_images_stop_the_run_naming_the_file_or_are_skipped_when_asked(tmp_path):
    folder = make_folder(tmp_path, ["ant", "bee"])
    (folder / "ant" / "broken.png").write_bytes(b"")
    (folder / "bee" / "cut.png").write_bytes((folder / "bee" / "img0.png").read_bytes()[:40])
    full = load_dataset(f"imagefolder:{folder}")
    position = list(full.dataset.source.files).index("ant/broken.png")
    with pytest.raises(CliprankError, match=r"ant/broken.png cannot be read .*--skip-unreadable"):
        full.dataset[position]
    skipping = load_dataset(f"imagefolder:{folder}", skip_unreadable=True)
    assert skipping.skipped == ("ant/broken.png", "bee/cut.png")
    assert len(skipping) == len(full) - 2 and all(skipping.dataset[i][0] for i in range(len(skipping)))
    assert skipping.fingerprint != full.fingerprint  # the report names the images it scored
    assert load_dataset(f"imagefolder:{folder}", skip_unreadable=True).fingerprint == skipping.fingerprint
    (folder / "bee" / "cut.png").unlink()  # the same readable files, fewer skipped: another fingerprint
    assert load_dataset(f"imagefolder:{folder}", skip_unreadable=True).fingerprint != skipping.fingerprint
    assert load_dataset(f"imagefolder:{folder}").skipped == ()  # nothing is decoded up front unless asked


# --- CLIP_benchmark names ------------------------------------------------------------------------------


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(CliprankError) as caught:
        load_dataset("petz")
    message = str(caught.value)
    assert "unknown dataset 'petz'" in message and "\n" not in message
    assert all(name in message for name in list_datasets()) and "imagefolder:PATH" in message


def test_known_names_cover_embedded_clip_benchmark_and_the_paper():
    names = set(list_datasets())
    assert {"digits", "textiles", "faces"} <= names
    assert {"caltech101", "pets", "flowers", "food101", "fgvc_aircraft", "dtd", "ucf101", "imagenet1k"} <= names
    assert set(catalog()) == names | {"imagefolder:PATH"}


@needs_clip_benchmark
def test_missing_data_says_what_to_get_and_where(tmp_path):
    with pytest.raises(CliprankError) as caught:
        load_dataset("pets", root=tmp_path)
    message = str(caught.value)
    assert f"{tmp_path}/oxford-iiit-pet" in message and "--dataset-root" in message and "--download" in message
    assert "\n" not in message
    with pytest.raises(CliprankError, match="no split 'val'; use one of test, train"):
        load_dataset("pets", split="val", root=tmp_path)


def fake_dtd(root):
    base = root / "dtd" / "dtd"
    lines = []
    for texture in ("banded", "zigzagged"):
        (base / "images" / texture).mkdir(parents=True)
        for i in (2, 1):
            Image.new("RGB", (4, 4)).save(base / "images" / texture / f"{texture}_{i:04d}.jpg")
            lines.append(f"{texture}/{texture}_{i:04d}.jpg")
    (base / "labels").mkdir()
    (base / "labels" / "test1.txt").write_text("\n".join(lines) + "\n")


def fake_food101(root):
    base = root / "food-101"
    (base / "meta").mkdir(parents=True)
    split = {"apple_pie": ["apple_pie/11", "apple_pie/10"], "baby_back_ribs": ["baby_back_ribs/12"]}
    for dish, ids in split.items():
        (base / "images" / dish).mkdir(parents=True)
        for image_id in ids:
            Image.new("RGB", (4, 4)).save(base / "images" / f"{image_id}.jpg")
    (base / "meta" / "test.json").write_text(json.dumps(split))


@needs_clip_benchmark
@pytest.mark.parametrize(
    "name, make, classnames, templates",
    [("dtd", fake_dtd, ["banded", "zigzagged"], 8), ("food101", fake_food101, ["apple pie", "baby back ribs"], 1)],
)
def test_torchvision_sets_read_their_layout_from_a_relative_root(
    tmp_path, monkeypatch, name, make, classnames, templates
):
    make(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(name, root="data")
    assert ds.classnames == classnames and len(ds.templates) == templates
    assert ds.prompt_source.startswith("clip_benchmark")
    files = ds.dataset.source.files
    assert list(files) == sorted(files) and all(f.startswith(("dtd/", "food-101/")) for f in files)
    assert ds.dataset[0][0].size == (4, 4) and ds.labels.tolist() == sorted(ds.labels.tolist())
    monkeypatch.chdir(tmp_path / "data")
    assert load_dataset(name, root=".").fingerprint == ds.fingerprint


def test_imagenet_reads_the_val_wnid_folder_layout(tmp_path):
    wnids = [f"n{i:08d}" for i in range(1000)]
    for i, wnid in enumerate(wnids[:3] + wnids[-1:]):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG")
    for wnid in wnids[3:-1]:
        (tmp_path / "val" / wnid).mkdir()
    ds = load_dataset("imagenet1k", root=tmp_path)
    assert ds.classnames == list(open_clip.IMAGENET_CLASSNAMES) and len(ds.templates) == 80
    assert ds.labels.tolist() == [0, 1, 2, 999] and "{c}" in ds.templates[0]
    with pytest.raises(CliprankError, match="imagenet1k.*val/<wnid>"):
        load_dataset("imagenet1k", root=tmp_path / "elsewhere")


def test_ucf101_reads_coops_midframes_and_split_file(tmp_path):
    base = tmp_path / "ucf101"
    rows = {"train": [], "val": [], "test": []}
    for label, action in enumerate(["Apply_Eye_Makeup", "Yo_Yo"]):
        (base / "UCF-101-midframes" / action).mkdir(parents=True)
        for split, clip in (("train", "g01"), ("test", "g09")):
            name = f"{action}/v_{action}_{clip}_c01.jpg"
            Image.new("RGB", (4, 4)).save(base / "UCF-101-midframes" / name)
            rows[split].append([name, label, action])
    (base / "split_zhou_UCF101.json").write_text(json.dumps(rows))
    ds = load_dataset("ucf101", root=tmp_path)
    assert ds.classnames == ["Apply Eye Makeup", "Yo Yo"] and ds.templates == ["a photo of a person doing {c}."]
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1] and ds.dataset[1][0].size == (4, 4)


@needs_clip_benchmark
def test_clip_benchmark_prompts_and_names():
    assert len(metadata.clip_benchmark_templates("pets")) == 1
    assert len(metadata.clip_benchmark_templates("caltech101")) == 34
    assert len(metadata.clip_benchmark_templates("dtd")) == 8
    assert metadata.clip_benchmark_templates("imagenet1k") == metadata.imagenet_templates()
    assert metadata.clip_benchmark_templates("pets") == ["a photo of a {c}, a type of pet."]
    assert len(metadata.clip_benchmark_classnames("pets")) == 37
    assert metadata.clip_benchmark_classnames("caltech101")[0] == "background"
    assert metadata.clip_benchmark_classnames("dtd") is None  # the dataset's own names are used
    assert metadata.clip_benchmark_source().startswith("clip_benchmark ")


def test_without_clip_benchmark_its_datasets_explain_the_install(monkeypatch):
    monkeypatch.setattr(metadata, "_clip_benchmark_folder", lambda: None)
    metadata._clip_benchmark_tables.cache_clear()
    try:
        with pytest.raises(CliprankError, match="pip install --no-deps clip-benchmark"):
            load_dataset("pets")
    finally:
        metadata._clip_benchmark_tables.cache_clear()


def test_templates_have_one_placeholder_convention():
    assert metadata.normalise_template(" a {} photo. ") == "a {c} photo."
    assert metadata.normalise_template("a {c}.").format(c="dog") == "a dog."
    for bad in ("no placeholder", "a {name}.", "a {} and {x}"):
        with pytest.raises(CliprankError, match="placeholder"):
            metadata.normalise_template(bad)


# --- loading -------------------------------------------------------------------------------------------


def test_loader_stacks_images_and_keeps_full_split_indices():
    ds = load_dataset("digits", limit=20, transform=pil_to_tensor)
    batches = list(make_loader(ds, batch_size=8))
    assert [len(b.indices) for b in batches] == [8, 8, 4]
    images = torch.cat([b.images for b in batches])
    assert images.shape == (20, 3, 64, 64) and images.dtype == torch.uint8
    assert torch.cat([b.indices for b in batches]).tolist() == ds.indices.tolist()
    assert torch.cat([b.labels for b in batches]).tolist() == ds.labels.tolist()
    held = preload(ds, batch_size=7)
    assert held.fingerprint == ds.fingerprint and torch.equal(next(iter(make_loader(held, 20))).images, images)
    shuffled = [b.indices.tolist() for b in make_loader(ds, batch_size=20, shuffle=True, seed=3)]
    assert shuffled == [b.indices.tolist() for b in make_loader(ds, batch_size=20, shuffle=True, seed=3)]
