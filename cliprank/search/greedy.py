"""Greedy search for an image's golden ranking of patch tokens (Patch Ranking, Wu et al., WACV 2025).

At the pruning block, every candidate change — removing one unit (a patch or a k×k block) from the
remaining set (`backward`, the paper's), or adding one unit to the kept set starting from the prefix
tokens alone (`forward`: the class token, or nothing on towers without one) — is scored by running
the remaining blocks; each step commits the units whose removal hurts least (or whose addition
helps most) until `step_tokens` patches have moved, and steps repeat until `total` of the patches
are removed (backward) or kept (forward).

Where the arithmetic goes, and nowhere else:
- blocks before the pruning layer run once per image (their output is shared by all candidates);
- candidates of all images in a chunk are evaluated together, grouped by token count so every
  batch is rectangular, in batches capped by `max_batch_tokens` (the memory knob);
- the text classifier for `label`/`max` scores is computed once, outside.

Final ranking, most to least important. Backward: surviving units by how much their removal hurt
(most first), then removed units, latest removed first. Forward: added units in the order they
were added, then the rest by how much they would have helped. Patches within a unit keep grid order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cliprank.engine.forward import embed, pool, resume, run_blocks
from cliprank.engine.plan import Plan
from cliprank.errors import CliprankError
from cliprank.models.arch import VisionArch
from cliprank.models.towers import describe
from cliprank.search.settings import SearchSettings
from cliprank.search.units import make_units, unit_matrix

SCORE_DTYPE = "float64"  # candidate scores are compared in this precision, whatever the model's


@dataclass
class SearchResult:
    ranking: torch.Tensor  # (B, P) int64 patch indices, most important first
    step_of: torch.Tensor  # (B, P) int64 step a patch left (backward) / joined (forward); -1 = never
    trajectory: torch.Tensor  # (B, steps + 1) float64 score after each step (index 0: before any), NaN-padded


Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (embeddings (G, D), image ids (G,)) -> (G,)


def make_scorer(
    mode: str, reference: torch.Tensor, classifier: torch.Tensor | None, labels: torch.Tensor | None
) -> Scorer:
    """Score of candidate embeddings for their images, float64; higher = the candidate set is better.

    Scores are computed in float64 whatever the model's precision, so that removing one patch still
    changes them: in float32 the cosine to the unpruned embedding sits within a few ulps of 1 and
    many candidates tie exactly, leaving the greedy choice to the tie rule. The cosine is taken as
    1 − ‖â − r̂‖²/2 from the difference of the unit vectors, which keeps its small changes exact. The
    embeddings themselves leave the pooling head in float32 even when the blocks run in bf16 or fp16
    (`pool(float32=True)`): a bf16 embedding would round most candidates to the same few values.
    """
    if mode == "similarity":
        target = F.normalize(reference.double(), dim=-1)

        def similarity(embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            difference = F.normalize(embeddings.double(), dim=-1) - target[images]
            return 1.0 - 0.5 * difference.square().sum(-1)

        return similarity
    if classifier is None:
        raise CliprankError(f"search: score '{mode}' needs the dataset's text classifier")
    if mode == "label":
        if labels is None:
            raise CliprankError("search: score 'label' needs ground-truth labels")
        classes = labels
    else:  # "max": the class the unpruned model predicts, so no label is needed
        classes = (F.normalize(reference.double(), dim=-1) @ classifier.double()).argmax(-1)
    columns = classifier.double().t()[classes]  # (B, D)

    def class_logit(embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return 100.0 * (F.normalize(embeddings.double(), dim=-1) * columns[images]).sum(-1)

    return class_logit


class CandidateEvaluator:
    """Runs the blocks after the pruning layer on many kept-patch sets, batched by token count.

    Sets of equal size form rectangular batches (no padding, so no wasted arithmetic and no masks);
    a size group larger than the `max_batch_tokens` cap is split into equal batches rather than full
    ones plus a small remainder, because a batch of a few sequences runs well below the GEMM rate of
    full ones (on a CPU: a few sequences reach ~70% of the rate of dozens).
    """

    def __init__(self, visual: torch.nn.Module, tokens: torch.Tensor, block: int, max_batch_tokens: int):
        self.visual = visual
        self.arch = describe(visual)
        self.tokens = tokens  # (B, N, C) entering the pruning block: prefix tokens, then every patch
        self.block = block
        self.max_batch_tokens = max_batch_tokens
        self.plan = Plan.identity(self.arch.depth)
        self.token_count = 0  # tokens entering the remaining blocks, summed over candidates (for benchmarks)
        # sequences run per token count (prefix included): exact MACs, N² attention term too (benchmarks)
        self.length_counts: Counter[int] = Counter()

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Final embeddings (G, D) for image ids (G,) keeping patches keep (G, P) bool, in float64.

        A set with no token at all (forward search's start on a tower without a class token) has no
        embedding: NaN.
        """
        out = torch.full(
            (len(images), self.arch.output_dim), float("nan"), device=self.tokens.device, dtype=torch.float64
        )
        prefix = self.arch.prefix_tokens
        lengths = keep.sum(1)
        for length in lengths.unique().tolist():
            if prefix + length == 0:
                continue
            members = (lengths == length).nonzero().squeeze(1)
            per_batch = max(1, self.max_batch_tokens // (length + prefix))
            for chosen in members.tensor_split(math.ceil(len(members) / per_batch)):
                patches = keep[chosen].nonzero()[:, 1].view(len(chosen), length)
                head = torch.arange(prefix, device=patches.device).expand(len(chosen), -1)
                index = torch.cat([head, patches + prefix], dim=1)
                x = self.tokens[images[chosen][:, None], index]
                state = run_blocks(self.visual, resume(self.visual, x, patches=patches), self.plan, start=self.block)
                out[chosen] = pool(self.visual, state, float32=True).double()
                self.token_count += x.shape[0] * x.shape[1]
                self.length_counts[x.shape[1]] += x.shape[0]
        return out


SetScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image ids (G,), keep (G, P) bool) -> (G,)


def greedy_rankings(
    score_sets: SetScorer,
    batch: int,
    grid: tuple[int, int],
    settings: SearchSettings,
    device: torch.device | str = "cpu",
) -> SearchResult:
    """The greedy search itself, for any scorer of kept-patch sets (the model, or a test's planted one)."""
    patches = grid[0] * grid[1]
    units = make_units(grid, settings.unit)
    members = unit_matrix(units, patches).to(device)  # (U, P)
    sizes = members.sum(1)
    backward = settings.direction == "backward"
    goal = settings.total_patches(patches) if backward else patches - settings.total_patches(patches)

    chosen = torch.zeros(batch, len(units), dtype=torch.bool, device=device)  # removed (bwd) / added (fwd)
    step_of = torch.full((batch, len(units)), -1, dtype=torch.long, device=device)
    last_score = torch.full((batch, len(units)), float("nan"), device=device, dtype=torch.float64)
    moved = torch.zeros(batch, dtype=torch.long, device=device)
    all_ids = torch.arange(batch, device=device)
    moved_list, size_list = [0] * batch, sizes.tolist()  # plain ints: the commit loop does no tensor work
    max_steps = math.ceil(goal / settings.step_tokens) + len(units)
    trajectory = torch.full((batch, max_steps + 1), float("nan"), dtype=torch.float64, device="cpu")  # the result
    trajectory[:, 0] = score_sets(all_ids, _kept(chosen, members, backward)).cpu().double()

    for step in range(max_steps):
        fits = (~chosen) & (moved[:, None] + sizes[None, :] <= goal)
        if not fits.any():
            break
        image_ids, unit_ids = fits.nonzero(as_tuple=True)
        kept_now = _kept(chosen, members, backward)
        flip = members[unit_ids]
        candidate_keep = kept_now[image_ids] & ~flip if backward else kept_now[image_ids] | flip
        candidate_scores = score_sets(image_ids, candidate_keep)
        last_score[image_ids, unit_ids] = candidate_scores.to(last_score.dtype)
        taken = _commit(image_ids, unit_ids, candidate_scores, moved_list, size_list, goal, settings)
        if taken:
            rows, cols = torch.tensor(taken, dtype=torch.long, device=device).unbind(1)
            chosen[rows, cols] = True
            step_of[rows, cols] = step
        moved = torch.tensor(moved_list, dtype=torch.long, device=device)
        active = image_ids.unique()
        kept_now = _kept(chosen, members, backward)
        trajectory[active.cpu(), step + 1] = score_sets(active, kept_now[active]).cpu().double()

    ranking_units = _order_units(chosen, step_of, last_score, backward)
    ranking, patch_step = _expand(ranking_units, units, step_of, patches)
    used = int((~trajectory.isnan()).any(0).nonzero().max()) + 1
    return SearchResult(ranking=ranking, step_of=patch_step, trajectory=trajectory[:, :used])


@torch.no_grad()
def search_batch(
    visual: torch.nn.Module,
    arch: VisionArch,
    images: torch.Tensor,
    settings: SearchSettings,
    classifier: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    max_batch_tokens: int = 32768,
) -> tuple[SearchResult, CandidateEvaluator]:
    """Golden rankings of a batch of preprocessed images, searched in lockstep with the model."""
    settings.validate(arch)
    identity = Plan.identity(arch.depth)
    entering = run_blocks(visual, embed(visual, images), identity, stop=settings.block)
    reference = pool(visual, run_blocks(visual, entering, identity, start=settings.block), float32=True)
    score = make_scorer(settings.score, reference, classifier, labels)
    evaluator = CandidateEvaluator(visual, entering.x, settings.block, max_batch_tokens)

    def score_sets(image_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return score(evaluator.embeddings(image_ids, keep), image_ids)

    result = greedy_rankings(score_sets, images.shape[0], arch.grid, settings, images.device)
    return result, evaluator


def _commit(
    image_ids: torch.Tensor,
    unit_ids: torch.Tensor,
    scores: torch.Tensor,
    moved: list[int],
    sizes: list[int],
    goal: int,
    settings: SearchSettings,
) -> list[tuple[int, int]]:
    """The (image, unit) pairs one greedy step commits; updates `moved` (patches moved per image) in place.

    Per image, candidates are visited best score first (ties: lower unit first, i.e. a stable sort
    over the candidates' order) and taken while the step has moved fewer than `step_tokens` patches
    and the unit still fits under `goal`. One sort for all images (stable by score, then stable by
    image) gives exactly the per-image orders, so the loop below touches only Python ints and the
    selection stays negligible next to the forwards even for 64-image chunks of 1×1 units.
    """
    by_score = scores.argsort(descending=True, stable=True)
    order = by_score[image_ids[by_score].argsort(stable=True)]
    taken: list[tuple[int, int]] = []
    current, moved_here = -1, 0
    for image, unit in zip(image_ids[order].tolist(), unit_ids[order].tolist(), strict=True):
        if image != current:
            current, moved_here = image, 0
        if moved_here >= settings.step_tokens or moved[image] + sizes[unit] > goal:
            continue
        taken.append((image, unit))
        moved[image] += sizes[unit]
        moved_here += sizes[unit]
    return taken


def _kept(chosen: torch.Tensor, members: torch.Tensor, backward: bool) -> torch.Tensor:
    """(B, P) bool: patches currently kept."""
    touched = (chosen.float() @ members.float()) > 0
    return ~touched if backward else touched


def _order_units(chosen: torch.Tensor, step_of: torch.Tensor, last_score: torch.Tensor, backward: bool):
    """Unit indices per image, most important first (see the module docstring)."""
    orders = []
    for image in range(chosen.shape[0]):
        scores = last_score[image].nan_to_num(float("inf") if backward else float("-inf")).tolist()
        steps = step_of[image].tolist()
        units = range(chosen.shape[1])
        if backward:
            survivors = sorted((u for u in units if steps[u] < 0), key=lambda u: (scores[u], u))
            removed = sorted((u for u in units if steps[u] >= 0), key=lambda u: (-steps[u], scores[u], u))
            orders.append(survivors + removed)
        else:
            added = sorted((u for u in units if steps[u] >= 0), key=lambda u: (steps[u], -scores[u], u))
            rest = sorted((u for u in units if steps[u] < 0), key=lambda u: (-scores[u], u))
            orders.append(added + rest)
    return orders


def _expand(orders: list[list[int]], units: list[list[int]], step_of: torch.Tensor, patches: int):
    ranking = torch.empty(len(orders), patches, dtype=torch.long, device="cpu")  # results go to a file
    patch_step = torch.empty(len(orders), patches, dtype=torch.long, device="cpu")
    for image, order in enumerate(orders):
        flat = [patch for unit in order for patch in units[unit]]
        ranking[image] = torch.tensor(flat, dtype=torch.long, device="cpu")
        for unit, members in enumerate(units):
            patch_step[image, members] = int(step_of[image, unit])
    return ranking, patch_step


def ranking_to_scores(ranking: torch.Tensor) -> torch.Tensor:
    """Per-patch importance scores (B, P) from rankings: P for the first patch down to 1 for the last."""
    patches = ranking.shape[1]
    scores = torch.empty(ranking.shape, dtype=torch.float32)
    values = torch.arange(patches, 0, -1, dtype=torch.float32).expand_as(ranking)
    return scores.scatter_(1, ranking.long(), values)
