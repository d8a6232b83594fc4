"""`evaluate`: zero-shot accuracy of every method × budget on every dataset, at matched cost.

From the top down (each module imports only those below it):

- `run`: the pipeline — for one model, solve the rows, and per dataset run a pass over the pending
  rows, measure what does not depend on the data, and write each complete record.
- `passes`: one pass over a dataset — every batch under every row — run by one of two strategies:
  in memory (one process) or sharded across torchrun ranks through part files (`parts`).
- `records`: a report record from a pass's results.
- `kernel`: one batch under one row; the only place images meet the model in an evaluation.

Speed and memory are measured by `cliprank.speed`, which `profile` shares.
"""
