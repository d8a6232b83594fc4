"""The ranking store: golden rankings as compact arrays, tied to the exact model and images.

One rankings file per (model fingerprint, dataset fingerprint, split, search settings): a
safetensors file whose arrays are indexed by row (`index` = the image's position in the full
dataset, `image_hash` = a hash of its preprocessed pixels) and whose header records what produced
them. Rankings therefore cannot be applied to another model, another preprocessing or other images:
`RankingLookup` checks all three and says what is wrong.

While a search runs, each finished chunk of images is written atomically to `<file>.parts/`; a
killed search resumes from the chunks present, and `merge` turns complete parts into the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cliprank.errors import CliprankError
from cliprank.io import load_tensors, save_tensors
from cliprank.search.greedy import SearchResult, ranking_to_scores

FORMAT = "cliprank.rankings/1"


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
        data = json.loads(text)
        data["grid"] = tuple(data["grid"])
        return cls(**data)


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: RankingsMeta) -> None:
    save_tensors(path, tensors, {"format": FORMAT, "meta": json.dumps(asdict(meta)), "identity": meta.identity()})


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return load_tensors(path, FORMAT, "rankings file", "rerun `cliprank search` or fix --rankings")


class RankingStore:
    """Chunked, resumable writing of one rankings file."""

    def __init__(self, path: Path, meta: RankingsMeta):
        self.path = Path(path)
        self.meta = meta
        self.parts = self.path.with_name(self.path.name + ".parts")

    def chunk_path(self, chunk: int) -> Path:
        return self.parts / f"chunk-{chunk:06d}.safetensors"

    def is_complete(self) -> bool:
        if not self.path.is_file():
            return False
        _, header = _read(self.path)
        if header.get("identity") != self.meta.identity():
            raise CliprankError(
                f"{self.path} holds rankings of another search (model, data or settings differ); "
                "pass another --out or delete it"
            )
        return True

    def done_chunks(self) -> set[int]:
        done = set()
        for part in sorted(self.parts.glob("chunk-*.safetensors")) if self.parts.is_dir() else []:
            _, header = _read(part)
            if header.get("identity") != self.meta.identity():
                raise CliprankError(
                    f"{self.parts} holds partial rankings of another search; delete that folder or pass another --out"
                )
            done.add(int(part.stem.split("-")[1]))
        return done

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
        pieces = [_read(self.chunk_path(c))[0] for c in range(chunks)]
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
        shutil.rmtree(self.parts, ignore_errors=True)
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
        path = Path(path)
        tensors, header = _read(path)
        try:
            meta = RankingsMeta.from_json(header["meta"])
        except (KeyError, TypeError, ValueError) as err:
            raise CliprankError(f"rankings file {path} has a damaged header; rerun `cliprank search`") from err
        return cls(meta=meta, **{k: tensors[k] for k in ("index", "image_hash", "ranking", "step_of", "trajectory")})


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
                continue  # rankings of another model in a shared folder are simply not this model's
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

    def require(self, dataset: str, split: str) -> RankingLookup:
        lookup = self.get(dataset, split)
        if lookup is None:
            have = ", ".join(f"{d}/{s}" for d, s in self.lookups) or "none"
            raise CliprankError(
                f"no golden rankings of this model for {dataset}/{split} (have: {have}); "
                f"run `cliprank search --dataset {dataset} --split {split}` and pass --rankings"
            )
        return lookup
