"""Which differences are real: per-image bits, Wilson intervals, exact McNemar, the mean test, letters,
and how the report, the summary and `compare --methods` show them."""

from __future__ import annotations

import json
import math
import random

import pytest
from cli_runner import run_cli
from scipy.stats import binomtest
from test_report import environment, record

from cliprank.report import Report, save_report
from cliprank.report.bits import pack_bits, unpack_bits
from cliprank.report.claims import dataset_claims, mean_claims
from cliprank.report.compare import compare_methods
from cliprank.report.markdown import render_markdown
from cliprank.report.schema import validate_record
from cliprank.report.significance import (
    SIGN_FLIP,
    compact_letters,
    mcnemar_exact,
    paired_mean_test,
    paired_test,
    wilson_interval,
)


def bits(right: int, images: int, seed: int = 0) -> list[bool]:
    """`right` of `images` correct, at seeded random positions."""
    positions = set(random.Random(seed).sample(range(images), right))
    return [i in positions for i in range(images)]


def scored(dataset: str, method: str, budget: float | None, correct: list[bool], **changes):
    """A report record whose acc1, interval and per-image bits come from `correct`."""
    right, images = sum(correct), len(correct)
    return record(
        dataset, method, budget, right / images, images=images,
        acc1_per_image=pack_bits(correct), acc1_ci95=list(wilson_interval(right, images)), **changes,
    )  # fmt: skip


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 500])
def test_bits_round_trip_and_refuse_the_wrong_count(count):
    values = bits(count // 2, count) if count else []
    text = pack_bits(values)
    assert unpack_bits(text, count) == values
    assert len(text) <= 4 * math.ceil(math.ceil(count / 8) / 3)  # one bit per image, base64
    with pytest.raises(ValueError):
        unpack_bits(text, count + 9)
    with pytest.raises(ValueError):
        unpack_bits("not base64!", count)


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 → 0.2553–0.3662; 15/148 → 0.0624–0.1605
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    low, high = wilson_interval(500, 500)
    assert high == 1.0 and 0.99 < low < 1.0  # sound at 100%, where a normal interval collapses


@pytest.mark.parametrize(("a_only", "b_only"), [(10, 2), (2, 10), (0, 0), (0, 6), (30, 31), (200, 160), (3, 0)])
def test_exact_mcnemar_is_the_two_sided_binomial_test_of_the_discordant_images(a_only, b_only):
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_paired_test_counts_only_discordant_images():
    a = [True] * 50 + [False] * 50
    b = [True] * 40 + [False] * 10 + [True] * 2 + [False] * 48
    result = paired_test(a, b)
    assert (result.a_only, result.b_only) == (10, 2)
    assert result.delta == pytest.approx(0.08) and result.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12, rel=1e-9)
    assert result.significant
    assert not paired_test(a, a).significant and paired_test(a, a).p_value == 1.0


def test_mean_test_over_datasets():
    one = paired_mean_test([(bits(60, 100, 1), bits(40, 100, 2))])
    assert one == paired_test(bits(60, 100, 1), bits(40, 100, 2))  # one dataset: exactly McNemar
    lopsided = [([True] * 20 + [False] * 80, [False] * 100), ([True] * 15 + [False] * 85, [False] * 100)]
    result = paired_mean_test(lopsided)
    assert result.test == SIGN_FLIP and result.p_value < 0.001 and result.delta == pytest.approx(0.175)
    balanced = [([True] * 10 + [False] * 10, [False] * 10 + [True] * 10), ([True, False] * 5, [False, True] * 5)]
    assert paired_mean_test(balanced).p_value == 1.0  # no difference at all: every draw is as extreme
    assert paired_mean_test(lopsided).p_value == result.p_value  # seeded: the same answer every time


def test_compact_letters_follow_the_pairwise_tests():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.2}
    differ = {("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")}
    letters = compact_letters(list(scores), scores.get, lambda x, y: (x, y) in differ or (y, x) in differ)
    assert letters == {"a": "a", "b": "ab", "c": "b", "d": "c"}
    for x in scores:
        for y in scores:
            if x < y:
                shares = bool(set(letters[x]) & set(letters[y]))
                assert shares == ((x, y) not in differ)
    assert compact_letters(["x", "y"], {"x": 1, "y": 0}.get, lambda *_: False) == {"x": "a", "y": "a"}


def test_records_refuse_per_image_bits_that_do_not_add_up_to_acc1():
    good = json.loads(json.dumps(scored("digits", "tome", 0.7, bits(80, 100)).to_dict()))
    assert validate_record(good) == []
    bad = {**good, "metrics": {**good["metrics"], "acc1": 0.81}}
    assert "not acc1" in " ".join(validate_record(bad))
    short = {**good, "acc1_per_image": pack_bits(bits(80, 90))}
    assert "holds 12 bytes" in " ".join(validate_record(short))


def significance_report() -> Report:
    """digits: tome within noise of unpruned, random clearly worse; the same on shapes."""
    unpruned = bits(90, 100, 0)
    near = list(unpruned)
    near[unpruned.index(True)] = False  # one image fewer: noise
    worse = [value and i % 2 == 0 for i, value in enumerate(unpruned)]  # loses about half: real
    records = []
    for dataset in ("digits", "shapes"):
        records += [
            scored(dataset, "none", None, unpruned),
            scored(dataset, "tome", 0.7, near),
            scored(dataset, "random", 0.7, worse),
        ]
    return Report(environment=environment(), records=records, created="2026-11-30T00:00:00Z")


def test_claims_letters_and_bold_deltas_in_the_markdown():
    report = significance_report()
    digits = [r for r in report.records if r.dataset == "digits"]
    claims = dataset_claims(digits)[0.7]
    assert not claims.significant("tome") and claims.significant("random")
    assert claims.letters == {"none": "a", "tome": "a", "random": "b"}
    assert mean_claims(report.records)[0.7].significant("random")
    text = render_markdown(report)
    assert "| tome | 89.00<sup>a</sup> | -1.00 |" in text  # plain: within noise
    assert "| random | 46.00<sup>b</sup> | **-44.00** |" in text  # bold: real
    assert "exact McNemar" in text and "no multiplicity correction" in text


def test_records_without_per_image_results_are_never_marked():
    report = significance_report()
    for r in report.records:
        r.acc1_per_image = None
    text = render_markdown(report)
    assert "<sup>" not in text and "**" not in text.split("## digits")[1]


def test_compare_two_methods_inside_one_report(tmp_path, capsys):
    path = tmp_path / "report.json"
    save_report(significance_report(), path)
    pairs = compare_methods(significance_report(), "tome", "random")
    assert [p.dataset for p in pairs] == ["digits", "shapes", "mean over 2 datasets"]
    assert all(p.test.significant and p.test.delta > 0 for p in pairs)
    assert run_cli(["compare", str(path), "--methods", "tome,none"]) == 0
    out = capsys.readouterr().out
    assert "tie (within noise)" in out and "tome > none" not in out
    assert run_cli(["compare", str(path), "--methods", "random,tome"]) == 0
    assert "tome > random" in capsys.readouterr().out
    assert run_cli(["compare", str(path), "--methods", "tome,evit"]) == 2
    assert "no dataset and budget where both tome and evit" in capsys.readouterr().err
    assert run_cli(["compare", str(path), "--methods", "tome"]) == 2


def test_the_regression_gate_says_whether_an_acc1_change_is_real():
    from cliprank.report.compare import Tolerances, compare_reports, render_summary

    base = significance_report()
    new = significance_report()
    for r in new.records:
        if r.method == "tome":  # tome now gets two more images wrong on each dataset: beyond 0.5 points, but noise
            correct = r.correct()
            flipped = [i for i, value in enumerate(correct) if value][:2]
            for i in flipped:
                correct[i] = False
            r.acc1_per_image, r.metrics["acc1"] = pack_bits(correct), sum(correct) / len(correct)
    result = compare_reports(base, new, Tolerances(acc_points=0.5))
    assert len(result.regressions) == 2 and all(not c.test.significant for c in result.regressions)
    assert "within noise (p=0.5; 0 images gained, 2 lost)" in render_summary(result, "a", "b", Tolerances())
