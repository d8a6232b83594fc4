"""Method specs typed on the command line: `topk,tome(r=8),evit(keep=0.7,locations=[3,6,9])`."""

from __future__ import annotations

import pytest

from cliprank.errors import CliprankError
from cliprank.methods.spec import format_method_spec, parse_method_specs, split_top_level


def test_commas_inside_brackets_do_not_split_specs():
    assert parse_method_specs("topk, tome(r=8),evit(keep=0.7, locations=[3,6,9])") == [
        ("topk", {}),
        ("tome", {"r": 8}),
        ("evit", {"keep": 0.7, "locations": [3, 6, 9]}),
    ]


def test_values_are_read_as_yaml_and_scientific_numbers_stay_numbers():
    [(name, knobs)] = parse_method_specs("prune-at(keep=1e-1,score=random,fuse=false,blocks=[1, 2])")
    assert name == "prune-at"
    assert knobs == {"keep": 0.1, "score": "random", "fuse": False, "blocks": [1, 2]}


def test_empty_parentheses_mean_defaults():
    assert parse_method_specs("ats()") == [("ats", {})]


def test_tokens_suffix_may_follow_the_knobs():
    expected = [("predictor+tokens", {"keep": 0.6})]
    assert parse_method_specs("predictor(keep=0.6)+tokens") == expected
    assert parse_method_specs("predictor+tokens(keep=0.6)") == expected


@pytest.mark.parametrize(
    "text",
    ["", "topk(keep=0.5", "topk(keep=0.5))", "topk(0.5)", "topk(keep=0.5,keep=0.6)", "9lives", "tome(r=8)x"],
)
def test_malformed_specs_are_one_line_errors(text):
    with pytest.raises(CliprankError) as error:
        parse_method_specs(text)
    assert "\n" not in str(error.value)


def test_split_top_level_respects_nesting():
    assert split_top_level("a(b,[c,d]),e") == ["a(b,[c,d])", "e"]


def test_format_is_canonical_and_round_trips():
    text = format_method_spec("evit", {"locations": [3, 6, 9], "keep": 0.7})
    assert text == "evit(keep=0.7,locations=[3,6,9])"
    assert parse_method_specs(text) == [("evit", {"keep": 0.7, "locations": [3, 6, 9]})]
