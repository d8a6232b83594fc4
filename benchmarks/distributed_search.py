"""Does the golden-ranking search scale with processes? 1 vs N processes measured, 8 GPUs projected.

Runs the same `cliprank search` twice as a user would: once as one process, once under
`torchrun --standalone --nproc_per_node N`, checks that both rankings files are identical, and reports:

- wall time of each command (start-up — importing torch, loading the model and data — included);
- per rank, the seconds spent searching its chunks (from the rank logs), hence the search cost per
  image and how evenly the chunks were shared;
- the final sync + merge (rank 0 reading every chunk and writing the rankings file);
- on paper, the time and speed-up on 1, 2, 4 and 8 GPUs for a whole split. Search sends nothing
  between ranks until the merge, so with chunk k on rank k mod G a run takes
  start-up + ⌈chunks / G⌉ · chunk · (cost per image) + merge. Pass `--per-image-seconds` to project a
  cost measured elsewhere (e.g. ViT-B/16 on one GPU from `benchmarks/search_speed.py`).

On a shared 2-core CPU the N-process run competes with itself and with anything else running, so
read its numbers as an upper bound on the cost of distribution, not as GPU scaling.

    python benchmarks/distributed_search.py --pretrained none --limit 24          # about a minute
    python benchmarks/distributed_search.py --model ViT-B-16 --pretrained openai --dataset pets --device cuda \\
        --processes 8 --limit 512 --out distributed_search.json
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
from output import write_result
from rich.console import Console
from rich.table import Table

from cliprank.errors import CliprankError
from cliprank.models import embedded
from cliprank.search.store import Rankings

SCHEMA_VERSION = "cliprank.distributed_search/1"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
CHUNK = re.compile(r"chunk (\d+) written: (\d+) images in ([\d.]+) s")
SUMMARY = re.compile(r"this\s+process\s+searched\s+(\d+)\s+in\s+([\d.]+)\s+s")  # rich may wrap the line


@dataclass
class RankWork:
    rank: int
    chunks: int
    images: int
    seconds: float


@dataclass
class Measured:
    images: int
    chunk_size: int
    wall_one: float
    search_one: float  # seconds the one process spent searching (its summary line, 0.1 s resolution)
    wall_many: float
    processes: int
    ranks: list[RankWork]
    merge_seconds: float
    identical: bool

    @property
    def per_image(self) -> float:
        return sum(r.seconds for r in self.ranks) / max(1, sum(r.images for r in self.ranks))

    @property
    def startup(self) -> float:
        """What the N-process command spent outside searching and merging (launch, imports, model, data)."""
        return self.wall_many - max(r.seconds for r in self.ranks) - self.merge_seconds


def search_args(args: argparse.Namespace, out: Path) -> list[str]:
    command = [
        "search",
        "--model",
        args.model,
        "--pretrained",
        args.pretrained,
        "--dataset",
        args.dataset,
        "--split",
        args.split,
        "--limit",
        str(args.limit),
        "--chunk-size",
        str(args.chunk_size),
        "--device",
        args.device,
        "--out",
        str(out),
    ]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def timed(command: list[str], log: Path) -> float:
    """Wall seconds of a command run as a user would; its output goes to `log`."""
    began = time.perf_counter()
    with open(log, "wb") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log}:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - began


def stamp(line: str) -> float | None:
    match = STAMP.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


def rank_work(logs: Path) -> tuple[list[RankWork], float]:
    """Per-rank search seconds from the rank logs, and rank 0's sync + merge after the last chunk."""
    ranks, last_chunk, merged = [], 0.0, 0.0
    for log in sorted(logs.glob("rank-*.log")):
        chunks = images = 0
        seconds = 0.0
        for line in log.read_text().splitlines():
            if match := CHUNK.search(line):
                chunks, images, seconds = chunks + 1, images + int(match.group(2)), seconds + float(match.group(3))
                last_chunk = max(last_chunk, stamp(line) or 0.0)
            elif "merged" in line:
                merged = stamp(line) or 0.0
        ranks.append(RankWork(int(log.stem.split("-")[1]), chunks, images, seconds))
    return ranks, max(0.0, merged - last_chunk)


def measure(args: argparse.Namespace, folder: Path) -> Measured:
    one, many = folder / "one.rankings", folder / "many.rankings"
    python = [sys.executable, "-m"]
    wall_one = timed([*python, "cliprank", *search_args(args, one)], folder / "one.out")
    summary = SUMMARY.search((folder / "one.out").read_text())
    search_one = float(summary.group(2)) if summary else float("nan")
    torchrun = [*python, "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes)]
    wall_many = timed([*torchrun, "-m", "cliprank", *search_args(args, many)], folder / "many.out")
    ranks, merge = rank_work(Path(f"{many}.logs"))
    a, b = Rankings.load(one), Rankings.load(many)
    identical = a.meta == b.meta and all(
        torch.equal(getattr(a, n).nan_to_num(-1), getattr(b, n).nan_to_num(-1))
        for n in ("index", "image_hash", "ranking", "step_of", "trajectory")
    )
    return Measured(
        len(a.index), args.chunk_size, wall_one, search_one, wall_many, args.processes, ranks, merge, identical
    )


def projected_seconds(images: int, chunk: int, gpus: int, per_image: float, startup: float, merge: float) -> float:
    """Start-up + the busiest rank's chunks + the merge (which grows with the number of images)."""
    chunks = math.ceil(images / chunk)
    busiest = math.ceil(chunks / gpus) * chunk
    return startup + min(busiest, images) * per_image + merge


def show(measured: Measured, args: argparse.Namespace, project: int, per_image: float) -> dict:
    console = Console()
    table = Table(title=f"search of {measured.images} images, chunks of {measured.chunk_size} (measured)")
    for column in ("run", "wall s", "search s (per rank)", "images (per rank)"):
        table.add_column(column, justify="right")
    table.add_row("1 process", f"{measured.wall_one:.1f}", f"{measured.search_one:.1f}", str(measured.images))
    table.add_row(
        f"{measured.processes} processes",
        f"{measured.wall_many:.1f}",
        " / ".join(f"{r.seconds:.2f}" for r in measured.ranks),
        " / ".join(str(r.images) for r in measured.ranks),
    )
    console.print(table)
    console.print(
        f"identical rankings: {measured.identical}; search cost {per_image * 1000:.1f} ms/image "
        f"({'given' if args.per_image_seconds else 'measured'}); start-up {measured.startup:.1f} s; "
        f"sync + merge {measured.merge_seconds * 1000:.0f} ms; speed-up of the search itself "
        f"{measured.search_one / max(r.seconds for r in measured.ranks):.2f}×, of the whole command "
        f"{measured.wall_one / measured.wall_many:.2f}× (start-up included)"
    )
    merge = measured.merge_seconds * project / max(1, measured.images)
    base = projected_seconds(project, measured.chunk_size, 1, per_image, measured.startup, merge)
    projection = Table(
        title=f"projected: {project} images, chunks of {measured.chunk_size}, no communication but the merge"
    )
    for column in ("GPUs", "hours", "speed-up", "efficiency"):
        projection.add_column(column, justify="right")
    rows = []
    for gpus in (1, 2, 4, 8):
        seconds = projected_seconds(project, measured.chunk_size, gpus, per_image, measured.startup, merge)
        rows.append({"gpus": gpus, "seconds": seconds, "speedup": base / seconds})
        projection.add_row(str(gpus), f"{seconds / 3600:.3f}", f"{base / seconds:.2f}×", f"{base / seconds / gpus:.0%}")
    console.print(projection)
    return {"projected_images": project, "per_image_seconds": per_image, "projection": rows}


def full_split_size(args: argparse.Namespace) -> int:
    from cliprank.data import load_dataset

    return len(load_dataset(args.dataset, split=args.split))


def has_embedded_weights() -> bool:
    try:
        embedded.weights_path()
    except CliprankError:
        return False
    return True


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cliprank-tiny")
    parser.add_argument("--pretrained", default=None, help="default: embedded when its weights exist, else none")
    parser.add_argument("--dataset", default="faces")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=24, help="images searched by each measured run")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--project-images", type=int, default=None, help="default: the whole split")
    parser.add_argument("--per-image-seconds", type=float, default=None, help="project this cost instead")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    if args.pretrained is None:
        args.pretrained = embedded.TAG if args.model == embedded.MODEL_NAME and has_embedded_weights() else "none"
    return args


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory(prefix="cliprank-distributed-") as folder:
        measured = measure(args, Path(folder))
    per_image = args.per_image_seconds or measured.per_image
    projection = show(measured, args, args.project_images or full_split_size(args), per_image)
    if args.out:
        body = {
            "measured": asdict(measured)
            | {"per_image_seconds": measured.per_image, "startup_seconds": measured.startup},
            **projection,
        }
        write_result(args.out, SCHEMA_VERSION, args, args.threads or 0, body)


if __name__ == "__main__":
    main()
