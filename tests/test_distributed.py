"""torchrun on the CPU (gloo, 2 processes): search, evaluate and training equal one process, and resume after a kill.

Each distributed run is a real `python -m torch.distributed.run --standalone --nproc_per_node 2 -m cliprank …`.
The kill is real too: rank 1's process is sent SIGKILL once it has written its first chunk or batch (its
pid is read from its own log), torchrun then stops rank 0, and the rerun of the same command must compute
only what no file holds yet. Sizes are odd (11 images) so the shards are uneven.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cliprank.cli import main
from cliprank.distributed import Distributed
from cliprank.precision import FP32
from cliprank.predictor.settings import TrainSettings
from cliprank.predictor.train import TrainingData, train
from cliprank.report.schema import load_report
from cliprank.search.store import Rankings

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
SEARCH = (
    "search --pretrained none --dataset faces --limit 11 --chunk-size 2 --unit 1 --step-tokens 8 --threads 1".split()
)
SPEED_FIELDS = ("throughput", "latency_ms", "peak_memory_mb")


@pytest.fixture(autouse=True)
def restore_threads():
    """In-process runs pass --threads 1 (as each torchrun worker has); the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_here(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"cliprank {' '.join(argv)} exited with {exit_.code}"


def launch(args: list[str], log: Path) -> subprocess.Popen:
    stream = open(log, "ab")  # noqa: SIM115 — handed to the child, closed when it ends
    try:
        return subprocess.Popen([*TORCHRUN, *args], stdout=stream, stderr=subprocess.STDOUT, env=os.environ.copy())
    finally:
        stream.close()


def torchrun(args: list[str], log: Path, timeout: float = 240) -> int:
    process = launch(args, log)
    return process.wait(timeout=timeout)


def rank_pid(log: Path) -> int | None:
    """The pid rank r logged when it started (the last start: logs are appended across reruns)."""
    if not log.is_file():
        return None
    pids = re.findall(r"started: pid (\d+)", log.read_text())
    return int(pids[-1]) if pids else None


def kill_rank_when(process: subprocess.Popen, log: Path, ready: Callable[[], bool], timeout: float = 240) -> None:
    """SIGKILL the rank that writes `log` as soon as `ready()`; then torchrun stops the others and exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the kill: nothing was tested"
        assert time.monotonic() < deadline, "timed out waiting for the first part file"
        time.sleep(0.01)
    pid = rank_pid(log)
    assert pid is not None, f"no pid logged in {log}: cannot kill the rank under test"
    os.kill(pid, signal.SIGKILL)
    assert process.wait(timeout=timeout) != 0


def last_run_lines(log: Path) -> list[str]:
    """This rank's log lines since its last start."""
    text = log.read_text()
    return text[text.rindex("started: pid") :].splitlines()


def written(logs: Path, pattern: str) -> list[int]:
    """Work items each rank reports writing in its last run (e.g. chunk numbers)."""
    items = []
    for log in sorted(logs.glob("rank-*.log")):
        items += [int(m.group(1)) for line in last_run_lines(log) if (m := re.search(pattern, line))]
    return items


@pytest.fixture(scope="module")
def rankings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process search every distributed result is compared with (also evaluate's golden rankings)."""
    path = tmp_path_factory.mktemp("single") / "faces.rankings"
    threads = torch.get_num_threads()
    run_here([*SEARCH, "--out", str(path)])
    torch.set_num_threads(threads)
    return path


def test_search_killed_rank_resumes_to_the_one_process_rankings(rankings: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.rankings"
    parts, logs = Path(f"{out}.parts"), Path(f"{out}.logs")
    chunks = math.ceil(11 / 2)
    args = ["-m", "cliprank", *SEARCH, "--out", str(out)]

    first = launch(args, tmp_path / "first.out")
    kill_rank_when(first, logs / "rank-1.log", lambda: (parts / "chunk-000001.safetensors").is_file())
    assert not out.exists()
    done = {int(p.stem.split("-")[1]) for p in parts.glob("chunk-*.safetensors")}
    assert 1 in done and len(done) < chunks

    assert torchrun(args, tmp_path / "second.out") == 0, (tmp_path / "second.out").read_text()
    again = written(logs, r"chunk (\d+) written")
    assert sorted(again + sorted(done)) == list(range(chunks)), "a finished chunk was recomputed or one was lost"
    assert not parts.exists()

    one, two = Rankings.load(rankings), Rankings.load(out)
    assert one.meta == two.meta
    for name in ("index", "image_hash", "ranking", "step_of"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name
    assert torch.equal(one.trajectory.nan_to_num(-1), two.trajectory.nan_to_num(-1))
    assert (tmp_path / "second.out").read_text().count("rankings:") == 1  # one summary, from rank 0


def test_torchrun_with_one_process_sets_up_a_process_group(monkeypatch) -> None:
    """`torchrun --nproc_per_node 1` takes the distributed path (part files, merge): what one GPU can check."""
    launcher = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29512"}
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    launched = Distributed.from_environment("cpu")
    assert launched.enabled and launched.world_size == 1 and launched.backend == "gloo"
    monkeypatch.delenv("MASTER_ADDR")
    assert not Distributed.from_environment("cpu").enabled  # a plain process that happens to have RANK set


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in SPEED_FIELDS}


def test_evaluate_killed_rank_resumes_to_the_one_process_report(rankings: Path, tmp_path: Path) -> None:
    """Golden rows, ranking agreement, per-image costs and counted GMACs (rank 0 alone) survive sharding and merging."""
    common = [
        *"evaluate --pretrained none --dataset faces --split train --limit 11 --batch-size 1".split(),
        *"--method none,topk,random,tome,evit,golden --budget 0.6,0.7,0.9 --no-speed --threads 1 --rankings".split(),
        str(rankings),
    ]
    run_here([*common, "--out", str(tmp_path / "one")])
    out = tmp_path / "two"
    args = ["-m", "cliprank", *common, "--out", str(out)]

    first = launch(args, tmp_path / "first.out")
    kill_rank_when(first, out / "logs" / "rank-1.log", lambda: any((out / ".parts").glob("*/batch-000001.pt")))
    assert not (out / "report.json").exists()
    done = {int(p.stem.split("-")[1]) for p in (out / ".parts").glob("*/batch-*.pt")}
    assert 1 in done and len(done) < 11

    assert torchrun(args, tmp_path / "second.out") == 0, (tmp_path / "second.out").read_text()
    again = written(out / "logs", r"batch (\d+) written")
    assert sorted(again + sorted(done)) == list(range(11)), "a finished batch was recomputed or one was lost"
    assert not (out / ".parts").exists()

    one = [comparable(r.to_dict()) for r in load_report(tmp_path / "one" / "report.json").records]
    two = [comparable(r.to_dict()) for r in load_report(out / "report.json").records]
    assert [r["key"] for r in one] == [r["key"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert_close(a, b, a["key"])
    agreement = {r["method"]: r["ranking_agreement"] for r in two}
    assert agreement["topk"] is not None and agreement["evit"] is not None
    assert (tmp_path / "second.out").read_text().count("report:") == 1  # one summary, from rank 0


def assert_close(a: object, b: object, where: str) -> None:
    """Equal, except floats (accuracy, mean GMACs, agreement) up to floating-point tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9, nan_ok=True), where
    else:
        assert a == b, where


# --- training: gradients summed over ranks equal one process on the same global batch ---------------------


def planted_data(n: int, seed: int) -> TrainingData:
    """Patch importance is a fixed linear function of each token's features (as in test_predictor)."""
    direction = torch.randn(8, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 17, 8, generator=torch.Generator().manual_seed(seed))
    return TrainingData(x.half(), (x[:, 1:] @ direction).argsort(dim=1, descending=True), kept=10)


def train_planted(folder: Path, dist: Distributed) -> dict[str, dict]:
    """Both losses on 49 rows in global batches of 16: the last batch has 1 row, so rank 0's slice is empty."""
    model = SimpleNamespace(
        arch=SimpleNamespace(tokens=17, width=8, prefix_tokens=1), fingerprint="planted", device="cpu", precision=FP32
    )
    results = {}
    for loss in ("kl", "margin"):
        settings = TrainSettings(loss=loss, epochs=3, batch_size=16, lr=3e-3, dim=8, channel_hidden=16, pairs=32)
        val = planted_data(16, 1)
        module, history = train(model, planted_data(49, 0), val, settings, folder / loss, dist=dist)
        with torch.no_grad():
            log_probs = module(val.tokens.float()).log_softmax(dim=1)
        results[loss] = {"state": module.state_dict(), "history": history["history"], "log_probs": log_probs}
    return results


WORKER = """
import sys
from pathlib import Path

import torch

sys.path.insert(0, {tests!r})
from test_distributed import train_planted
from cliprank.distributed import Distributed

with Distributed.from_environment() as dist:
    result = train_planted(Path(sys.argv[1]), dist)
    torch.save(result, Path(sys.argv[1]) / f"rank-{{dist.rank}}.pt")
"""


def test_training_on_two_ranks_equals_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    (tmp_path / "two").mkdir()
    code = torchrun([str(script), str(tmp_path / "two")], tmp_path / "worker.out")
    assert code == 0, (tmp_path / "worker.out").read_text()
    (tmp_path / "one").mkdir()
    one = train_planted(tmp_path / "one", Distributed())
    for rank in (0, 1):
        two = torch.load(tmp_path / "two" / f"rank-{rank}.pt", weights_only=True)
        for loss in ("kl", "margin"):
            # What the loss sees (patch log-probabilities) agrees to float precision. A few parameters only
            # shift every patch's score alike, so their true gradient is zero and Adam amplifies the
            # rounding noise summed in another order: for those, a looser bound.
            assert torch.allclose(one[loss]["log_probs"], two[loss]["log_probs"], atol=1e-5), (rank, loss)
            for name, value in one[loss]["state"].items():
                assert torch.allclose(value, two[loss]["state"][name], atol=1e-3), (rank, loss, name)
            assert [e["epoch"] for e in two[loss]["history"]] == [1, 2, 3]
            losses = [entry["loss"] for entry in two[loss]["history"]]
            assert losses == pytest.approx([entry["loss"] for entry in one[loss]["history"]], rel=1e-6)
