"""Bad input and hostile files, one table: each case is one line on stderr, exit status 2, no traceback.

To add a case, add a row to CASES: the command line (`{tmp}` is the test's temporary folder), a
fragment of the expected message, the files it needs (a function that makes them under `{tmp}`), and
whether the command line alone (no model, no torch) must already refuse it (`early`). Every case runs
through `cliprank.cli.main`; the early ones also run in a fresh interpreter that must answer them
without importing torch or open_clip.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cliprank.cli import main
from cliprank.models import embedded

ASSETS = embedded.ASSETS
PREDICTOR = ASSETS / "cliprank-tiny.predictor.safetensors"
TOKENS = ASSETS / "tokens" / "predictor-b0.7.tokens.safetensors"
RANKINGS = ASSETS / "rankings" / "digits-test.rankings"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # the TorchScript case's archive
QUICK = ["--limit", "4", "--batch-size", "4", "--no-speed", "--no-flops", "--patch-maps", "0"]
PROFILE_QUICK = ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--images", "2"]
TOKENS_QUICK = ["--dataset", "digits", "--limit", "6", "--epochs", "1", "--batch-size", "6"]


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    message: str  # a fragment of the one line on stderr ({tmp} allowed)
    files: Callable[[Path], None] | None = None  # makes what the command line names, under tmp
    early: bool = False  # refused from the command line alone, before torch is imported


# ----- files the cases name ---------------------------------------------------------------------------


def png(path: Path, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def image_folder(bad_name: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """`tmp/photos/{cat,dog}/` with good PNGs, and `cat/<bad_name>` holding `content(a good PNG's bytes)`."""

    def make(tmp: Path) -> None:
        good = b""
        for label in ("cat", "dog"):
            for k in range(2):
                good = png(tmp / "photos" / label / f"{k}.png", seed=k)
        (tmp / "photos" / "cat" / bad_name).write_bytes(content(good))

    return make


def rewritten(source: Path, name: str, header=lambda h: h, tensors=lambda t: t) -> Callable[[Path], None]:
    """A copy of a shipped safetensors file at tmp/name, its header and tensors changed."""

    def make(tmp: Path) -> None:
        with safe_open(str(source), framework="pt") as handle:
            metadata = dict(handle.metadata())
        save_file(tensors(load_file(str(source))), str(tmp / name), metadata=header(metadata))

    return make


def without(key: str) -> Callable[[dict], dict]:
    return lambda mapping: {k: v for k, v in mapping.items() if k != key}


def replaced(key: str, value) -> Callable[[dict], dict]:
    return lambda mapping: {**mapping, key: value}


def out_of_range(tensors: dict) -> dict:
    ranking = tensors["ranking"].clone()
    ranking[0, 0] = 30000
    return {**tensors, "ranking": ranking}


def cut_to_five_columns(tensors: dict) -> dict:
    return {**tensors, "ranking": tensors["ranking"][:, :5].contiguous()}


def written(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data() if callable(data) else data)

    return make


def folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir(parents=True)


def torch_bytes(obj, legacy: bool = False) -> bytes:
    stream = io.BytesIO()
    torch.save(obj, stream, _use_new_zipfile_serialization=not legacy)
    return stream.getvalue()


def truncated_zip() -> bytes:
    return torch_bytes({"identity": "x", "module": {"w": torch.zeros(100)}})[:300]


def torchscript() -> bytes:
    stream = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), stream)
    return stream.getvalue()


def read_only(tmp: Path) -> None:
    """tmp/locked: a folder nothing can be written in (for root, whom permissions do not stop: a link to /sys)."""
    if os.geteuid() == 0:
        (tmp / "locked").symlink_to("/sys")
    else:
        (tmp / "locked").mkdir()
        (tmp / "locked").chmod(0o555)


def several(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        for maker in makers:
            maker(tmp)

    return make


@pytest.fixture(scope="module")
def train_and_val_rankings(tmp_path_factory) -> Path:
    """Golden rankings of the embedded model on 4 train and 4 val digits: what train-predictor reads."""
    folder_ = tmp_path_factory.mktemp("rankings")
    for split in ("train", "val"):
        argv = ["search", "--dataset", "digits", "--split", split, "--limit", "4", "--step-tokens", "8"]
        assert run([*argv, "--out", str(folder_ / f"digits-{split}.rankings")])[0] == 0
    return folder_


# ----- the table ----------------------------------------------------------------------------------------

EVALUATE = ("evaluate", "--out", "{tmp}/out", *QUICK)
ADD_TOKENS = ("add-tokens", "--method", "tome", "--budget", "0.7", *TOKENS_QUICK, "--out", "{tmp}/t.safetensors")
TRAIN = ("train-predictor", "--rankings", "{rankings}", "--dataset", "digits", "--limit", "4", "--epochs", "1")
IMAGES = "imagefolder:{tmp}/photos"

CASES: dict[str, Case] = {
    # names, specs, budgets, knobs
    "unknown model": Case((*EVALUATE, "--model", "ViT-Q-99", "--pretrained", "none"), "unknown model", early=True),
    "unknown tag": Case(
        (*EVALUATE, "--model", "ViT-B-16", "--pretrained", "nope"), "neither a pretrained tag", early=True
    ),
    "unknown method": Case((*EVALUATE, "--method", "magic"), "unknown method 'magic'", early=True),
    "unknown knob": Case((*EVALUATE, "--method", "tome(speed=3)"), "unknown parameter(s) speed", early=True),
    "empty knob value (tome)": Case((*EVALUATE, "--method", "tome(r=)"), "knob 'r' has no value", early=True),
    "empty knob value (topk)": Case((*EVALUATE, "--method", "topk(keep=)"), "knob 'keep' has no value", early=True),
    "unclosed bracket": Case(("profile", "--method", "topk(keep=0.5"), "bracket", early=True),
    "budget out of range": Case((*EVALUATE, "--method", "topk", "--budget", "1.5"), "out of range", early=True),
    "bad knob value": Case((*EVALUATE, "--pretrained", "none", "--method", "topk(keep=0)"), "keep=0", early=True),
    "knob of the wrong type": Case((*EVALUATE, "--method", "random(seed=1.5)"), "expected an integer", early=True),
    "negative ToMe r (recipe-style list)": Case((*EVALUATE, "--method", "tome(r=[8,-1])"), "must be >= 0", early=True),
    "blocks out of order": Case(("profile", "--method", "evit(blocks=3/1)"), "increasing order", early=True),
    "unknown importance score": Case((*EVALUATE, "--method", "ats(score=cos)"), "must be one of", early=True),
    "block beyond the tower": Case((*EVALUATE, "--pretrained", "none", "--method", "topk(blocks=99)"), "0..5"),
    "list knob without brackets": Case((*EVALUATE, "--method", "tome(r=8,8)"), "a list as [8,8,4]", early=True),
    "convolutional model": Case(
        (*EVALUATE, "--model", "RN50", "--pretrained", "none"), "'RN50' is not supported: convolutional", early=True
    ),
    "unknown knob (profile)": Case(
        ("profile", "--pretrained", "none", "--method", "topk(kep=0.5)"), "unknown param", early=True
    ),
    "search knob out of range": Case(
        ("search", "--pretrained", "none", "--dataset", "digits", "--unit", "0"), "unit=0 must be >= 1", early=True
    ),
    "search total not a fraction": Case(("search", "-d", "digits", "--total", "1.5"), "fraction in (0, 1)", early=True),
    "unknown search score": Case(("search", "-d", "digits", "--score", "cosine"), "must be one of", early=True),
    "search block beyond the tower": Case(("search", "-d", "digits", "--block", "9"), "block=9 must be in 1..5"),
    "unknown dataset": Case((*EVALUATE, "--dataset", "mnistt", "--method", "none"), "unknown dataset", early=True),
    "missing dataset offline": Case((*EVALUATE, "--pretrained", "none", "--dataset", "pets"), "dataset-root"),
    "golden without rankings": Case((*EVALUATE, "--pretrained", "none", "--method", "golden"), "rankings"),
    "profile golden without images": Case(("profile", "--method", "golden", "--budget", "0.8"), "--dataset"),
    "add-tokens count 0": Case((*ADD_TOKENS, "--count", "0"), "nothing to train", early=True),
    "add-tokens unknown placement": Case((*ADD_TOKENS, "--placement", "wide"), "shallow, deep", early=True),
    "add-tokens learning rate 0": Case((*ADD_TOKENS, "--lr", "0"), "lr=0.0 must be > 0", early=True),
    "add-tokens block beyond the tower": Case((*ADD_TOKENS, "--block", "9"), "block=9 must be in 0..5"),
    "train-predictor unknown target": Case((*TRAIN, "--target", "best"), "graded, authors", early=True),
    "train-predictor unknown preset": Case((*TRAIN, "--preset", "paper"), "unknown preset 'paper'", early=True),
    # devices
    "device tpu (evaluate)": Case((*EVALUATE, "--device", "tpu"), "device 'tpu' is not supported", early=True),
    "device tpu (search)": Case(("search", "-d", "digits", "--device", "tpu"), "device 'tpu'", early=True),
    "device cuda:x": Case((*EVALUATE, "--device", "cuda:x"), "device 'cuda:x' is not supported", early=True),
    # precisions
    "unknown precision": Case((*EVALUATE, "--precision", "fp8"), "unknown precision 'fp8'", early=True),
    "unknown precision (search)": Case(
        ("search", "-d", "digits", "--precision", "half"), "unknown precision", early=True
    ),
    # recipes
    "unknown recipe": Case(("evaluate", "--recipe", "no-such-recipe"), "recipe not found", early=True),
    "recipe unknown key": Case(
        ("evaluate", "--recipe", "{tmp}/r.yaml"), "unknown key 'modle'", written("r.yaml", b"modle: x\n"), early=True
    ),
    "recipe value of the wrong type": Case(
        ("evaluate", "--recipe", "{tmp}/r.yaml"),
        "r.yaml: 'limit: forty' is invalid",
        written("r.yaml", b"limit: forty\n"),
        early=True,
    ),
    # weights
    "missing checkpoint": Case((*EVALUATE, "--pretrained", "/nowhere/model.pt"), "checkpoint not found", early=True),
    "folder as checkpoint": Case(
        (*EVALUATE, "--pretrained", "{tmp}/weights"),
        "is a folder; pass the checkpoint file",
        folder("weights"),
        early=True,
    ),
    "empty checkpoint": Case(
        ("profile", "--pretrained", "{tmp}/empty.pt"), "corrupt or unreadable (EOFError)", written("empty.pt", b"")
    ),
    "torchscript without trust": Case(
        ("profile", "--pretrained", "{tmp}/openai.pt"),
        "--trust-torchscript",
        written("openai.pt", torchscript),
        early=True,
    ),
    # 1. unreadable images
    "empty image (evaluate)": Case(
        (*EVALUATE, "--pretrained", "none", "--dataset", IMAGES, "--method", "none"),
        "cat/empty.png cannot be read",
        image_folder("empty.png", lambda good: b""),
    ),
    "random bytes as image (search)": Case(
        ("search", "--pretrained", "none", "-d", IMAGES, "--split", "test", "--out", "{tmp}/r.rankings"),
        "cat/noise.jpg cannot be read",
        image_folder("noise.jpg", lambda good: os.urandom(500)),
    ),
    "truncated PNG (evaluate)": Case(
        (*EVALUATE, "--pretrained", "none", "--dataset", IMAGES, "--method", "none"),
        "cat/cut.png cannot be read",
        image_folder("cut.png", lambda good: good[: len(good) // 2]),
    ),
    "text named .png (search)": Case(
        ("search", "--pretrained", "none", "-d", IMAGES, "--split", "test", "--out", "{tmp}/r.rankings"),
        "cat/notes.png cannot be read",
        image_folder("notes.png", lambda good: b"shopping list\n"),
    ),
    "unreadable image in a worker": Case(
        (*EVALUATE, "--pretrained", "none", "--dataset", IMAGES, "--method", "none", "--workers", "1"),
        "cat/empty.png cannot be read",
        image_folder("empty.png", lambda good: b""),
    ),
    # 2. valid containers, damaged contents
    "predictor without block": Case(
        (*EVALUATE, "--method", "predictor", "--predictor", "{tmp}/p.safetensors"),
        "lacks 'block'",
        rewritten(PREDICTOR, "p.safetensors", without("block")),
    ),
    "predictor trained_on not JSON": Case(
        (*EVALUATE, "--method", "predictor", "--predictor", "{tmp}/p.safetensors"),
        "'trained_on' is not valid JSON",
        rewritten(PREDICTOR, "p.safetensors", replaced("trained_on", "[digits")),
    ),
    "predictor block out of range": Case(
        (*EVALUATE, "--method", "predictor", "--predictor", "{tmp}/p.safetensors"),
        "block 99 is not a block",
        rewritten(PREDICTOR, "p.safetensors", replaced("block", "99")),
    ),
    "predictor of random bytes": Case(
        (*EVALUATE, "--method", "predictor", "--predictor", "{tmp}/p.safetensors"),
        "is unreadable or corrupt",
        written("p.safetensors", os.urandom(64)),
    ),
    "tokens without setup": Case(
        (*EVALUATE, "--method", "predictor+tokens", "--tokens", "{tmp}/t.safetensors"),
        "lacks 'setup'",
        rewritten(TOKENS, "t.safetensors", without("setup")),
    ),
    "rankings without trajectory": Case(
        (*EVALUATE, "--dataset", "digits", "--method", "golden", "--rankings", "{tmp}/g.rankings"),
        "lacks the trajectory",
        rewritten(RANKINGS, "g.rankings", tensors=without("trajectory")),
    ),
    "ranking value out of range": Case(
        (*EVALUATE, "--dataset", "digits", "--method", "golden", "--rankings", "{tmp}/g.rankings"),
        "not an ordering of the 64 patches",
        rewritten(RANKINGS, "g.rankings", tensors=out_of_range),
    ),
    "rankings cut to 5 columns": Case(
        (*EVALUATE, "--dataset", "digits", "--method", "golden", "--rankings", "{tmp}/g.rankings"),
        "'ranking' tensor is not",
        rewritten(RANKINGS, "g.rankings", tensors=cut_to_five_columns),
    ),
    "rankings meta not JSON": Case(
        (*EVALUATE, "--dataset", "digits", "--method", "golden", "--rankings", "{tmp}/g.rankings"),
        "'meta' is missing or incomplete",
        rewritten(RANKINGS, "g.rankings", replaced("meta", "{")),
    ),
    # 3. damaged training checkpoints
    "checkpoint of random bytes (add-tokens)": Case(
        ADD_TOKENS, "delete it to train from the first epoch", written("t.safetensors.ckpt", os.urandom(256))
    ),
    "checkpoint a truncated zip (add-tokens)": Case(
        ADD_TOKENS,
        "training checkpoint {tmp}/t.safetensors.ckpt is damaged",
        written("t.safetensors.ckpt", truncated_zip),
    ),
    "checkpoint a pickle (add-tokens)": Case(
        ADD_TOKENS, "is damaged", written("t.safetensors.ckpt", lambda: torch_bytes(Path("x"), legacy=True))
    ),
    "checkpoint without training state (add-tokens)": Case(
        ADD_TOKENS, "does not hold a whole training state", written("t.safetensors.ckpt", lambda: torch_bytes({"x": 1}))
    ),
    "checkpoint of random bytes (train-predictor)": Case(
        (*TRAIN, "--out", "{tmp}/p.safetensors"),
        "training checkpoint {tmp}/p.safetensors.ckpt is damaged",
        written("p.safetensors.ckpt", os.urandom(256)),
    ),
    # 4. unusable outputs, found before any work
    "evaluate --out is a file": Case(
        (*EVALUATE, "--out", "{tmp}/taken"), "is a file, but a folder is needed", written("taken", b"x"), early=True
    ),
    "search --out is a folder": Case(
        ("search", "-d", "digits", "--out", "{tmp}/dir"), "is a folder, but a file is needed", folder("dir"), early=True
    ),
    "train-predictor --out is a folder": Case(
        (*TRAIN, "--out", "{tmp}/dir"),
        "is a folder, but a file is needed",
        several(folder("dir"), folder("r")),
        early=True,
    ),
    "add-tokens --out inside a file": Case(
        (*ADD_TOKENS[:-1], "{tmp}/taken/t.safetensors"),
        "taken is a file, not a folder",
        written("taken", b"x"),
        early=True,
    ),
    "evaluate --out read-only": Case(
        (*EVALUATE, "--out", "{tmp}/locked/run"), "is not writable", read_only, early=True
    ),
    "search --out read-only": Case(
        ("search", "-d", "digits", "--out", "{tmp}/locked/r.rankings"), "is not writable", read_only, early=True
    ),
    "show --out is a folder": Case(
        ("show", "-d", "digits", "-i", "1", "--out", "{tmp}/dir"),
        "is a folder, but a file is needed",
        folder("dir"),
        early=True,
    ),
    "profile --out is a file": Case(
        ("profile", "--out", "{tmp}/taken"), "is a file, but a folder is needed", written("taken", b"x"), early=True
    ),
    "missing --rankings": Case(
        (*EVALUATE, "--rankings", "{tmp}/nowhere"), "--rankings {tmp}/nowhere not found", early=True
    ),
    # 9. another model's rankings
    "rankings of another model": Case(
        (*EVALUATE, "--pretrained", "none", "--dataset", "digits", "--method", "golden", "--rankings", str(RANKINGS)),
        "searched with model cliprank-tiny/embedded, not this one",
    ),
    # 15. wording
    "search --out names a file that is not rankings": Case(
        ("search", "-d", "digits", "--limit", "2", "--out", "{tmp}/notes.txt"),
        "pass another --out",
        written("notes.txt", b"my notes\n"),
    ),
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = Case(("profile", "--pretrained", "none", "--device", "cuda"), "no CUDA GPU")


def run(argv: list[str]) -> tuple[int, str, str]:
    """`cliprank ARGV` in this process: (exit status, stdout, stderr); any exception is a test failure."""
    out, err = io.StringIO(), io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    return code, out.getvalue(), err.getvalue()


def prepared(case: Case, tmp: Path, rankings: Path | None = None) -> tuple[list[str], str]:
    if case.files is not None:
        case.files(tmp)
    fill = {"tmp": str(tmp), "rankings": str(rankings or tmp / "r")}
    return [part.format(**fill) for part in case.argv], case.message.format(**fill)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_status_2(name: str, tmp_path: Path, request) -> None:
    case = CASES[name]
    rankings = request.getfixturevalue("train_and_val_rankings") if "{rankings}" in case.argv else None
    argv, message = prepared(case, tmp_path, rankings)
    code, out, err = run(argv)
    assert code == 2, (out, err)
    assert message in err, err
    assert "Traceback" not in out + err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not (tmp_path / "out" / "report.json").exists()  # nothing half-written


def test_the_command_line_alone_refuses_early_cases_without_importing_torch(tmp_path: Path) -> None:
    """Bad arguments, specs, recipes, devices and paths are answered before torch or open_clip is imported."""
    argvs = {}
    for index, (name, case) in enumerate(CASES.items()):
        if case.early:
            folder_ = tmp_path / f"case-{index}"
            folder_.mkdir()
            argvs[name] = prepared(case, folder_)[0]
    code = (
        "import json, sys\n"
        "from cliprank.cli import main\n"
        "seen = {}\n"
        "for name, argv in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        seen[name] = [exit_.code, sorted(m for m in ('torch', 'open_clip') if m in sys.modules)]\n"
        "print(json.dumps(seen))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argvs)], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {name: [2, []] for name in argvs}


@pytest.mark.parametrize("command", [["--help"], ["methods"], ["models"], ["datasets"], ["evaluate", "--help"]])
def test_listings_and_help_do_not_import_torch_or_open_clip(command: list[str]) -> None:
    code = (
        "import sys\nfrom cliprank.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit_:\n    assert not exit_.code, exit_.code\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_pickle_is_never_unpickled_as_a_checkpoint(tmp_path: Path) -> None:
    """The 'pickle' checkpoint case is refused by weights_only, not by luck of its contents."""
    path = tmp_path / "evil.ckpt"
    path.write_bytes(torch_bytes(Path("x"), legacy=True))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not zipfile.is_zipfile(path)
