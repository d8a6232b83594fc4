"""Candidate units of the greedy search: single patches or non-overlapping k×k blocks of patches.

When the grid is not divisible by k, the last row/column of blocks is narrower — every patch
belongs to exactly one unit, and nothing assumes a square grid.
"""

from __future__ import annotations

import torch


def make_units(grid: tuple[int, int], block: int) -> list[list[int]]:
    """Patch indices (row-major, 0-based) of each unit, units in row-major order."""
    if block < 1:
        raise ValueError("the candidate block size must be >= 1")
    rows, cols = grid
    units = []
    for top in range(0, rows, block):
        for left in range(0, cols, block):
            units.append(
                [r * cols + c for r in range(top, min(top + block, rows)) for c in range(left, min(left + block, cols))]
            )
    return units


def unit_matrix(units: list[list[int]], patches: int) -> torch.Tensor:
    """(U, P) bool membership matrix."""
    matrix = torch.zeros(len(units), patches, dtype=torch.bool, device="cpu")  # built here, moved by its user
    for index, members in enumerate(units):
        matrix[index, members] = True
    return matrix
