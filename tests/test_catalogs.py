"""The catalogs the command line answers from without importing torch agree with the live registries.

`cliprank methods`, `cliprank models` and the checks of `--method`, `--model` and `--pretrained` read
data (`methods/catalog.json`, open_clip's config files and pretrained table); these tests import the
real things and compare, so the data can never drift from the code.
"""

from __future__ import annotations

import open_clip
import pytest
from towers import model_name

from cliprank.errors import CliprankError
from cliprank.methods import catalog as methods_catalog
from cliprank.methods.base import REGISTRY
from cliprank.methods.registry import methods
from cliprank.models import catalog, embedded
from cliprank.models.loading import known_models, vision_refusal


def test_the_method_catalog_is_the_registry() -> None:
    live = {name: methods_catalog.describe(REGISTRY[name]) for name in sorted(REGISTRY)}
    assert methods() and methods_catalog.builtin() == live, (
        "cliprank/methods/catalog.json is out of date: run `python -m cliprank.methods.registry`"
    )


def test_the_model_names_are_open_clips() -> None:
    registered_by_tests = model_name("")  # the small timm towers other tests register at run time
    assert list(catalog.configs()) == [name for name in known_models() if not name.startswith(registered_by_tests)]
    assert embedded.MODEL_NAME in catalog.configs()


@pytest.mark.parametrize("name", list(catalog.configs()))
def test_support_read_from_the_config_agrees_with_building_the_tower(name: str) -> None:
    """The JSON-based decision `cliprank models` shows is the one a load makes on the meta-device tower."""
    assert catalog.refusal(catalog.configs()[name]) == vision_refusal(name)


def test_pretrained_tags_read_from_source_are_open_clips() -> None:
    for name in catalog.configs():
        assert catalog.tags(name) == open_clip.list_pretrained_tags_by_model(name), name
    assert set(catalog.pretrained_tags()) == {name for name, _ in open_clip.list_pretrained()}


# Knob values the command line refuses before torch loads, with the words the method itself uses.
TOWER_FREE_MISTAKES = [
    ("topk", {"keep": 0}),
    ("topk", {"keep": "half"}),
    ("evit", {"keep": 1.5}),
    ("evit", {"blocks": [3, 1]}),
    ("evit", {"fuse": "maybe"}),
    ("ats", {"K": 1}),
    ("ats", {"score": "cos"}),
    ("tome", {"r": [8, -1]}),
    ("tome", {"inflect": 2}),
    ("random", {"seed": 1.5}),
    ("prune-at", {"block": -1}),
    ("golden", {"keep": float("nan")}),
]


@pytest.mark.parametrize(("name", "knobs"), TOWER_FREE_MISTAKES, ids=lambda v: str(v))
def test_tower_free_knob_mistakes_are_refused_from_the_catalog_as_the_method_refuses_them(name, knobs) -> None:
    from cliprank.methods.catalog import check_specs
    from cliprank.models.arch import VisionArch

    with pytest.raises(CliprankError) as early:
        check_specs([(name, knobs)])
    arch = VisionArch(768, 12, 12, 3072, (14, 14), (16, 16), 512, "tok", "nn.MultiheadAttention", "batch-first")
    with pytest.raises(CliprankError) as late:
        REGISTRY[name](arch, **knobs)
    first_words = str(late.value).split(" must ")[0].split(" has ")[0]
    assert str(early.value).startswith(first_words), (early.value, late.value)
    if "block" not in str(late.value):  # a block index is judged in full only once the depth is known
        assert str(early.value) == str(late.value)


@pytest.mark.parametrize(
    ("name", "knobs"), [("topk", {"blocks": [99]}), ("tome", {"r": [1] * 13}), ("prune-at", {"block": 12})]
)
def test_what_only_the_tower_decides_waits_for_the_tower(name, knobs) -> None:
    from cliprank.methods.catalog import check_specs
    from cliprank.models.arch import VisionArch

    check_specs([(name, knobs)])  # 13 values or block 99 may be fine for some tower
    arch = VisionArch(768, 12, 12, 3072, (14, 14), (16, 16), 512, "tok", "nn.MultiheadAttention", "batch-first")
    with pytest.raises(CliprankError, match="0..11|at most 12"):
        REGISTRY[name](arch, **knobs)


def test_a_model_whose_config_rules_it_out_is_refused_without_building_it() -> None:
    unsupported = [name for name, config in catalog.configs().items() if catalog.refusal(config)]
    assert "RN50" in unsupported
    for name in unsupported:
        with pytest.raises(CliprankError, match=f"model '{name}' is not supported"):
            catalog.check_model(name)
