"""Patch maps: pictures of what each reduction method keeps, merges and fuses, golden vs predictor.

survival    a recorded engine stage read per patch (kept, merged, fused, dropped) — no method names
capture     solved methods run on a few images with a recording trace
draw        composites (plain arrays, what tests check) and the figure
images      which images: dataset indices, image files, a deterministic few for reports
patch_maps  capture + draw into one PNG (used by `cliprank show` and by evaluate reports)
report      the figure an evaluate report carries for each dataset
"""
