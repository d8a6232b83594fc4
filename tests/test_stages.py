"""Stage recording: a recording Trace knows, after every reduction, which original patches each token stands for."""

from __future__ import annotations

import torch

from cliprank.engine import TokenState, Trace, encode
from cliprank.methods.budget import solve
from cliprank.methods.evit import reorganize
from cliprank.methods.tome import bipartite_merge


def test_recording_changes_no_embedding_and_every_patch_has_at_most_one_token(tiny, tiny_images) -> None:
    for name, values in [("tome", {"r": 6}), ("evit", {"keep": 0.7}), ("ats", {"K": 24}), ("topk", {"keep": 0.5})]:
        plan = solve(name, tiny.arch, values, None).method.plan()
        plain, recorded = Trace(), Trace.recording()
        with torch.inference_mode():
            expected = encode(tiny.visual, tiny_images, plan, None, plain)
            embeddings = encode(tiny.visual, tiny_images, plan, None, recorded)
        torch.testing.assert_close(embeddings, expected, rtol=0, atol=0)
        assert plain.stages is None and recorded.stages, name
        for stage in recorded.stages:
            valid = torch.ones(stage.pos.shape, dtype=torch.bool) if stage.valid is None else stage.valid
            sources = stage.sources * valid.unsqueeze(-1)
            assert sources.sum(dim=1).max() <= 1, name  # no patch stands in two tokens
            assert (stage.sources[valid].sum(dim=1) >= 1).all(), name  # every real token stands for a patch


def test_merged_tokens_are_exactly_the_mean_of_the_patches_they_stand_for() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1 + 12, 5, generator=generator)
    state = TokenState.initial(x).track_sources(12)
    for r in (3, 2, 2):  # three merges in a row, no block in between: merged tokens stay plain means
        metric = torch.randn(2, state.body_count, 4, generator=generator)
        state = bipartite_merge(state, metric, r)
    sources = state.body(state.sources)
    assert state.body_count == 12 - 7
    for image in range(2):
        for token in range(state.body_count):
            members = sources[image, token].nonzero().flatten()
            assert state.body(state.size)[image, token] == len(members)
            torch.testing.assert_close(state.body(state.x)[image, token], x[image, 1 + members].mean(dim=0))


def test_the_fused_token_stands_for_exactly_the_dropped_patches() -> None:
    x = torch.randn(1, 1 + 6, 3, generator=torch.Generator().manual_seed(0))
    scores = torch.tensor([[0.05, 0.3, 0.1, 0.2, 0.25, 0.1]])
    state = reorganize(TokenState.initial(x).track_sources(6), scores, kept=3, fuse=True)
    sources = state.body(state.sources)[0]
    assert sources[:3].argmax(dim=1).tolist() == [1, 3, 4]  # the three most attended, in order
    assert sources[3].nonzero().flatten().tolist() == [0, 2, 5]
    torch.testing.assert_close(state.body(state.x)[0, 3], (scores[0, [0, 2, 5], None] * x[0, [1, 3, 6]]).sum(0))
