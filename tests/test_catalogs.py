"""The catalogs the command line answers from without importing torch agree with the live registries.

`cliprank methods`, `cliprank models` and the checks of `--method`, `--model` and `--pretrained` read
data (`methods/catalog.json`, open_clip's config files and pretrained table); these tests import the
real things and compare, so the data can never drift from the code.
"""

from __future__ import annotations

import open_clip
import pytest
from towers import model_name

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
