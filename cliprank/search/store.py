"""The ranking store: golden rankings as compact arrays, tied to the exact model and images.

One rankings file per (model fingerprint, dataset fingerprint, split, search settings): a
safetensors file whose arrays are indexed by row (`index` = the image's position in the full
dataset, `image_hash` = a hash of its preprocessed pixels) and whose header records what produced
them. Rankings therefore cannot be applied to another model, another preprocessing or other images:
`RankingLookup` checks all three and says what is wrong.

While a search runs, each finished chunk of images is written atomically to `<file>.parts/`; a
killed search resumes from the chunks present, and `merge` turns complete parts into the file. A
damaged chunk counts as not written, so the rerun computes it again.

Every file is checked on reading: the header's fields, and one row per image in every tensor with each
ranking a complete ordering of the patches. Damage is one line naming the file and how to replace it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cliprank.errors import CliprankError
from cliprank.io import load_tensors, save_tensors
from cliprank.search.greedy import SearchResult, ranking_to_scores

FORMAT = "cliprank.rankings/1"
TENSORS = ("index", "image_hash", "ranking", "step_of", "trajectory")
INPUT_FIX = "search again with `cliprank search`, or pass other --rankings"
OUTPUT_FIX = "pass another --out, or delete it if it is a damaged rankings file and rerun `cliprank search`"
ROWS_PER_CHECK = 65536  # rankings sorted at once when checking a file (bounds the memory a big file takes)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankingsMeta:
    model: str
    pretrained: str
    model_fingerprint: str
    dataset: str
    split: str
    dataset_fingerprint: str
    images: int  # images searched (rows of the file)
    patches: int
    grid: tuple[int, int]
    settings: dict[str, Any]
    chunk_size: int
    # how candidate scores were compared: "float64" since scores stopped saturating in float32 (files
    # written before carry no field and read as "float32"; their parts are never mixed with new ones)
    score_dtype: str = "float32"
    # the precision the model ran in (`cliprank.precision`); files written before it was recorded were fp32
    precision: str = "fp32"

    def identity(self) -> str:
        """Hash of everything that determines the rankings (not where they are written)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> RankingsMeta:
        """The header's `meta`; ValueError or TypeError when a field is missing, unknown or of the wrong type."""
        data = json.loads(text)
        data["grid"] = tuple(data["grid"])
        meta = cls(**data)
        counts = (meta.images, meta.patches, meta.chunk_size, *meta.grid)
        if not all(isinstance(n, int) and n >= 0 for n in counts) or meta.patches != meta.grid[0] * meta.grid[1]:
            raise ValueError("image, patch and chunk counts must be integers, the grid holding the patches")
        if not (isinstance(meta.settings, dict) and isinstance(meta.settings.get("block"), int)):
            raise ValueError("settings must record the search's block")
        return meta


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: RankingsMeta) -> None:
    save_tensors(path, tensors, {"format": FORMAT, "meta": json.dumps(asdict(meta)), "identity": meta.identity()})


def _damaged(path: Path, problem: str, fix: str) -> CliprankError:
    return CliprankError(f"rankings file {path} is damaged: {problem}; {fix}")


def _read(path: Path, fix: str, rows: int | None = None) -> tuple[RankingsMeta, dict[str, torch.Tensor], str]:
    """Meta, tensors and identity of a rankings file (or chunk of `rows` images), every field checked."""
    tensors, header = load_tensors(path, FORMAT, "rankings file", fix)
    try:
        meta = RankingsMeta.from_json(header["meta"])
    except (KeyError, TypeError, ValueError) as err:
        raise _damaged(path, "its header's 'meta' is missing or incomplete", fix) from err
    problem = _tensor_problem(tensors, meta, meta.images if rows is None else rows)
    if problem is not None:
        raise _damaged(path, problem, fix)
    return meta, tensors, header.get("identity", "")


def _orders(ranking: torch.Tensor, patches: int) -> bool:
    """Whether every row of `ranking` holds each of 0..patches-1 exactly once."""
    ordered = torch.arange(patches, dtype=torch.long).expand(len(ranking), -1)
    return torch.equal(ranking.long().sort(dim=1).values, ordered)


def _tensor_problem(tensors: dict[str, torch.Tensor], meta: RankingsMeta, rows: int) -> str | None:
    """What is wrong with a file's tensors for `rows` images of `meta.patches` patches, or None."""
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        return f"it lacks the {', '.join(missing)} tensor(s)"
    shapes = {
        "index": (rows,),
        "image_hash": (rows,),
        "ranking": (rows, meta.patches),
        "step_of": (rows, meta.patches),
    }
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape or tensors[name].is_floating_point():
            return f"its '{name}' tensor is not {' × '.join(map(str, shape))} integers"
    trajectory = tensors["trajectory"]
    if trajectory.dim() != 2 or trajectory.shape[0] != rows or not trajectory.is_floating_point():
        return f"its 'trajectory' tensor is not {rows} rows of scores"
    if not all(_orders(piece, meta.patches) for piece in tensors["ranking"].split(ROWS_PER_CHECK)):
        return f"a ranking is not an ordering of the {meta.patches} patches"
    index = tensors["index"]
    if rows and (int(index.min()) < 0 or len(index.unique()) != rows or int(tensors["step_of"].min()) < -1):
        return "its image indices or steps are out of range"
    return None


class RankingStore:
    """Chunked, resumable writing of one rankings file."""

    def __init__(self, path: Path, meta: RankingsMeta):
        self.path = Path(path)
        self.meta = meta
        self.parts = self.path.with_name(self.path.name + ".parts")

    def chunk_path(self, chunk: int) -> Path:
        return self.parts / f"chunk-{chunk:06d}.safetensors"

    def is_complete(self) -> bool:
        if not self.path.exists():
            return False
        _, _, identity = _read(self.path, OUTPUT_FIX)
        if identity != self.meta.identity():
            raise CliprankError(
                f"{self.path} holds rankings of another search (model, data or settings differ); "
                "pass another --out or delete it"
            )
        return True

    def chunk_rows(self, chunk: int) -> int:
        return max(0, min(self.meta.chunk_size, self.meta.images - chunk * self.meta.chunk_size))

    def done_chunks(self) -> set[int]:
        """The chunks written; a damaged one is left out (and so computed again), another search's refused."""
        done = set()
        for part in sorted(self.parts.glob("chunk-*.safetensors")) if self.parts.is_dir() else []:
            chunk = int(part.stem.split("-")[1])
            try:
                _, _, identity = _read(part, OUTPUT_FIX, rows=self.chunk_rows(chunk))
            except CliprankError as err:
                log.warning("%s; computing it again", err)
                continue
            if identity != self.meta.identity():
                raise CliprankError(
                    f"{self.parts} holds partial rankings of another search; delete that folder or pass another --out"
                )
            done.add(chunk)
        return done

    def discard_parts(self) -> None:
        """Remove the parts folder (chunks a concurrent search wrote after the merge, killed writes' leftovers)."""
        shutil.rmtree(self.parts, ignore_errors=True)

    def write_chunk(self, chunk: int, index: torch.Tensor, hashes: torch.Tensor, result: SearchResult) -> None:
        tensors = {
            "index": index.to(torch.int64),
            "image_hash": hashes.to(torch.int64),
            "ranking": result.ranking.to(torch.int16),
            "step_of": result.step_of.to(torch.int16),
            "trajectory": result.trajectory.to(torch.float32),
        }
        _save(self.chunk_path(chunk), tensors, self.meta)

    def merge(self, chunks: int) -> Path:
        """Concatenate chunks 0..chunks-1 (all must exist) into the rankings file, then drop the parts."""
        missing = [c for c in range(chunks) if not self.chunk_path(c).is_file()]
        if missing:
            raise CliprankError(f"cannot merge rankings: chunks {missing[:5]} are missing; rerun the search to finish")
        fix = "rerun `cliprank search`: it computes damaged chunks again"
        pieces = [_read(self.chunk_path(c), fix, rows=self.chunk_rows(c))[1] for c in range(chunks)]
        steps = max(p["trajectory"].shape[1] for p in pieces)
        merged: dict[str, torch.Tensor] = {}
        for name in ("index", "image_hash", "ranking", "step_of"):
            merged[name] = torch.cat([p[name] for p in pieces])
        merged["trajectory"] = torch.cat(
            [
                torch.nn.functional.pad(p["trajectory"], (0, steps - p["trajectory"].shape[1]), value=float("nan"))
                for p in pieces
            ]
        )
        _save(self.path, merged, self.meta)
        self.discard_parts()
        return self.path


@dataclass
class Rankings:
    meta: RankingsMeta
    index: torch.Tensor
    image_hash: torch.Tensor
    ranking: torch.Tensor
    step_of: torch.Tensor
    trajectory: torch.Tensor

    @property
    def kept(self) -> int:
        """Patches the search kept — the golden top-k for overlap and predictor targets.

        Whole units move, so this can fall short of the requested total by less than a unit; it is
        read from the results (the most common count over images), not from the settings.
        """
        moved = self.step_of >= 0
        per_image = (~moved if self.meta.settings.get("direction") == "backward" else moved).sum(1)
        return int(per_image.mode().values) if len(per_image) else 0

    @classmethod
    def load(cls, path: Path) -> Rankings:
        meta, tensors, _ = _read(Path(path), INPUT_FIX)
        return cls(meta=meta, **{name: tensors[name] for name in TENSORS})


class RankingLookup:
    """Per-patch golden scores for batches of images, after checking they are the searched images."""

    def __init__(self, rankings: Rankings, model_fingerprint: str, source: str = "rankings"):
        if rankings.meta.model_fingerprint != model_fingerprint:
            raise CliprankError(
                f"{source} were searched with model {rankings.meta.model}/{rankings.meta.pretrained} "
                f"(fingerprint {rankings.meta.model_fingerprint}), not the model being evaluated; "
                "search again with this model"
            )
        self.rankings = rankings
        self.source = source
        self.row_of = {int(i): row for row, i in enumerate(rankings.index.tolist())}
        self.scores = ranking_to_scores(rankings.ranking.long())

    def check_dataset(self, name: str, split: str) -> None:
        meta = self.rankings.meta
        if (meta.dataset, meta.split) != (name, split):
            raise CliprankError(
                f"{self.source} belong to {meta.dataset}/{meta.split}, not {name}/{split}; pass the matching --rankings"
            )

    def rows(self, indices: torch.Tensor, hashes: torch.Tensor | None) -> torch.Tensor:
        rows = []
        for index in indices.tolist():
            if int(index) not in self.row_of:
                raise CliprankError(
                    f"{self.source} have no ranking for image {index} of {self.rankings.meta.dataset}; "
                    "search the images you evaluate (same split and --limit or larger)"
                )
            rows.append(self.row_of[int(index)])
        rows = torch.tensor(rows, dtype=torch.long, device="cpu")  # rows of the file, which lives on the CPU
        if hashes is not None and not torch.equal(self.rankings.image_hash[rows], hashes.cpu()):
            raise CliprankError(
                f"{self.source} do not match these images (content hash differs: other data or preprocessing); "
                "search again on this dataset"
            )
        return rows

    def patch_scores(self, indices: torch.Tensor, hashes: torch.Tensor | None) -> torch.Tensor:
        """(B, P) importance, higher = more important, in original patch order."""
        return self.scores[self.rows(indices, hashes)]


class RankingIndex:
    """The rankings available to one model, by (dataset, split): what `golden` and agreement read."""

    def __init__(self, paths: list[Path], model_fingerprint: str):
        self.lookups: dict[tuple[str, str], RankingLookup] = {}
        self.foreign: list[tuple[Path, RankingsMeta]] = []  # rankings of other models, said when they are missed
        files: list[Path] = []
        for path in map(Path, paths):
            if path.is_dir():
                files.extend(sorted(path.glob("*.rankings")))
            elif path.is_file():
                files.append(path)
            else:
                raise CliprankError(f"rankings path not found: {path}; pass a rankings file or a folder of them")
        for file in files:
            rankings = Rankings.load(file)
            if rankings.meta.model_fingerprint != model_fingerprint:
                self.foreign.append((file, rankings.meta))  # another model's, as in a shared folder
                continue
            key = (rankings.meta.dataset, rankings.meta.split)
            if key in self.lookups:
                raise CliprankError(
                    f"two rankings files for {key[0]}/{key[1]} ({self.lookups[key].source} and {file}); keep one"
                )
            self.lookups[key] = RankingLookup(rankings, model_fingerprint, source=str(file))

    def __bool__(self) -> bool:
        return bool(self.lookups)

    def get(self, dataset: str, split: str) -> RankingLookup | None:
        return self.lookups.get((dataset, split))

    def why_empty(self) -> str:
        """Why no rankings are this model's: the files given hold other models' (named), or there are none."""
        if not self.foreign:
            return "no rankings files were found"
        file, meta = self.foreign[0]
        more = f" (and {len(self.foreign) - 1} more files of other models)" if len(self.foreign) > 1 else ""
        return f"{file} was searched with model {meta.model}/{meta.pretrained}, not this one{more}"

    def require(self, dataset: str, split: str) -> RankingLookup:
        lookup = self.get(dataset, split)
        if lookup is None:
            have = ", ".join(f"{d}/{s}" for d, s in self.lookups) or "none"
            other = [(f, m) for f, m in self.foreign if (m.dataset, m.split) == (dataset, split)]
            elsewhere = f"; {other[0][0]} holds them for {other[0][1].model}/{other[0][1].pretrained}" if other else ""
            raise CliprankError(
                f"no golden rankings of this model for {dataset}/{split} (have: {have}){elsewhere}; "
                f"run `cliprank search --dataset {dataset} --split {split}` with this model and pass --rankings"
            )
        return lookup
