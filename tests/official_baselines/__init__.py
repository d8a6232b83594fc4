"""Independent, minimal transcriptions of the official baseline code, for parity tests only.

Each module re-states one official algorithm from its repository (cited by file and line) in plain
PyTorch over an open_clip ViT, without any of cliprank's engine, methods or token state, so that a
test can run both on the same weights and images and demand equal embeddings and equal kept sets.
They are written for one image at a time (batch 1), as the official inference paths behave without
padding; cliprank's batched results are compared to them image by image.
"""
