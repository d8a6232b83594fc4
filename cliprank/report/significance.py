"""Which differences are real: intervals, paired tests and letter groups for records on the same images.

One image of a 300-500-image test set moves acc1 by 0.2-0.33 points, so a difference between two rows
is stated as an ordering only when a paired test on the same images says so. Every record stores which
images it got right (`acc1_per_image`, a packed bitset), so any two records on the same images can be
compared later without re-running anything.

- A record's 95% interval for acc1: the Wilson score interval (sound near 0% and 100%, where the
  normal approximation is not).
- Two records on one dataset: the exact McNemar test — a two-sided binomial test on the discordant
  images (right under one setting, wrong under the other), the only images a paired difference rests on.
- Two methods' means over several datasets: a paired sign-flip test stratified by dataset — under the
  null each discordant image is equally likely to favour either side, as in McNemar's test; the mean
  difference of acc1 over datasets is compared with 20,000 seeded random sign assignments.
- A group of settings: compact letters (Piepho, "An Algorithm for a Letter-Based Representation of
  All-Pairwise Comparisons", J. Comput. Graph. Stat. 2004): two settings share a letter unless their
  paired test says they differ; 'a' marks the best group.
Tests are two-sided at ALPHA = 0.05 per comparison, without a multiplicity correction (reports say so).

Pure Python plus numpy; no torch, so `cliprank compare` stays quick to start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cliprank.report.schema import Record

ALPHA = 0.05
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
SIGN_FLIP_DRAWS = 20_000
SIGN_FLIP_SEED = 0
EXACT_MCNEMAR = "exact McNemar"
SIGN_FLIP = f"paired sign-flip test stratified by dataset ({SIGN_FLIP_DRAWS:,} draws)"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, as fractions."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: P(a binomial(n, ½) is at least as lopsided), n = a_only + b_only."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    log_half = n * math.log(0.5)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half for i in range(k + 1)]
    peak = max(terms)
    tail = math.exp(peak) * math.fsum(math.exp(t - peak) for t in terms)
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of setting A against setting B on the same images."""

    delta: float  # acc1(A) − acc1(B) as a fraction (for several datasets: the mean of the per-dataset deltas)
    a_only: int  # images A gets right and B wrong (summed over datasets)
    b_only: int  # images B gets right and A wrong
    p_value: float
    test: str

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(images only A gets right, images only B gets right)."""
    if len(a) != len(b):
        raise ValueError("paired results must cover the same images")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    return a_only, b_only


def paired_test(a: Sequence[bool], b: Sequence[bool]) -> PairedTest:
    """Exact McNemar test of two settings' per-image correctness on one dataset."""
    a_only, b_only = discordant(a, b)
    return PairedTest((a_only - b_only) / len(a), a_only, b_only, mcnemar_exact(a_only, b_only), EXACT_MCNEMAR)


def paired_mean_test(pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]]) -> PairedTest:
    """The mean over datasets of acc1(A) − acc1(B), tested by sign flips of the discordant images.

    One dataset is the exact McNemar test. With several, each discordant image of dataset d moves the
    mean by ±1/(K·n_d); the p-value is the share of random sign assignments (and the observed one) whose
    mean difference is at least as far from zero as the observed.
    """
    if len(pairs) == 1:
        return paired_test(*pairs[0])
    import numpy as np  # imported here, not above: `compare` on one dataset starts without it

    counts = [(discordant(a, b), len(a)) for a, b in pairs]
    weights = np.array([1.0 / (len(counts) * n) for _, n in counts])
    observed = float(sum(w * (a_only - b_only) for w, ((a_only, b_only), _) in zip(weights, counts)))
    totals = np.array([a_only + b_only for (a_only, b_only), _ in counts])
    generator = np.random.default_rng(SIGN_FLIP_SEED)
    favour_a = generator.binomial(totals, 0.5, size=(SIGN_FLIP_DRAWS, len(counts)))
    simulated = ((2 * favour_a - totals) * weights).sum(axis=1)
    extreme = int(np.count_nonzero(np.abs(simulated) >= abs(observed) - 1e-12))
    a_only = sum(a for (a, _), _ in counts)
    b_only = sum(b for (_, b), _ in counts)
    return PairedTest(observed, a_only, b_only, (1 + extreme) / (1 + SIGN_FLIP_DRAWS), SIGN_FLIP)


def compact_letters(
    names: Sequence[str], score: Callable[[str], float], differ: Callable[[str, str], bool]
) -> dict[str, str]:
    """Letters per name such that two names share a letter exactly when `differ` does not separate them.

    Piepho's insert-and-absorb: start with one group holding everyone; for each pair that differs, split
    every group holding both into one without each; drop groups contained in others. Groups are lettered
    by their best member's score, so 'a' is the group of the best setting.
    """
    groups: list[set[str]] = [set(names)]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if not differ(first, second):
                continue
            split: list[set[str]] = []
            for group in groups:
                if first in group and second in group:
                    split += [group - {first}, group - {second}]
                else:
                    split.append(group)
            groups = [g for g in split if not any(g < other for other in split)]
            groups = [g for index, g in enumerate(groups) if g and g not in groups[:index]]
    order = {name: position for position, name in enumerate(names)}
    groups.sort(key=lambda g: (-max(score(n) for n in g), min(order[n] for n in g)))
    letters = {name: "" for name in names}
    for index, group in enumerate(groups):
        for name in group:
            letters[name] += _letter(index)
    return letters


def _letter(index: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[index] if index < 26 else f"[{index + 1}]"


def same_images(a: Record, b: Record) -> bool:
    """Whether two records were measured on the very same images, each with per-image results stored."""
    return (
        a.dataset_fingerprint == b.dataset_fingerprint
        and a.images == b.images
        and a.acc1_per_image is not None
        and b.acc1_per_image is not None
    )


def record_test(a: Record, b: Record) -> PairedTest | None:
    """The exact McNemar test of record A against record B, or None when they are not on the same images."""
    if not same_images(a, b):
        return None
    return paired_test(a.correct(), b.correct())


def mean_test(pairs: Sequence[tuple[Record, Record]]) -> PairedTest | None:
    """The test of the mean over datasets of acc1(A) − acc1(B); None unless every pair shares its images."""
    if not pairs or not all(same_images(a, b) for a, b in pairs):
        return None
    return paired_mean_test([(a.correct(), b.correct()) for a, b in pairs])
