"""Train the embedded default model: a small CLIP-style open_clip ViT, contrastively, on CPU.

Why these choices (each one was needed to train a CLIP from scratch on two CPU cores):
- The captions of a batch are deduplicated: with 16 classes every caption appears many times, so
  the loss is CLIP's symmetric InfoNCE over the *unique* captions (image->text over all captions,
  text->image with every image of that caption as a positive). Plain in-batch CLIP with duplicate
  captions collapses to a constant embedding.
- The text tower is first warmed up alone on the prompts: a random text tower maps prompts that differ
  in one word ("the digit three" / "the digit five") to nearly the same embedding (cosine ~0.97), which
  leaves the image tower no target to learn digits against. A short contrastive warm-up among the
  prompts themselves (prompts naming the same class are positives) spreads the classes apart. The text
  tower is then frozen for the first image steps and its learning rate ramped in afterwards.
- A background curriculum: backgrounds start dimmed and reach full clutter by 40% of training.
- fp32 loss, CLIP mean/std normalisation, AdamW with warm-up and cosine decay.

Images are composed on the fly from the *train* sources only (a fresh stream, never the fixed
train/test splits), so the model has seen none of the test sources. Training checkpoints every
`checkpoint_every` steps and resumes bit-for-bit: the data of step s is a pure function of s.

    python -m cliprank.models.train_embedded --out runs/embedded --steps 3000 --extra-steps 1000 --extra-cycles 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cliprank.data.embedded.compose import EMBEDDED
from cliprank.io import atomic_save_torch, atomic_write_text

ASSETS = Path(__file__).parent / "assets"
MODEL_NAME = "cliprank-tiny"


@dataclass
class Recipe:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    text_frozen_fraction: float = 0.15
    text_ramp_fraction: float = 0.10
    clutter_start: float = 0.3
    clutter_full_at: float = 0.4
    dataset_weights: tuple[float, ...] = (0.55, 0.225, 0.225)
    text_warmup_steps: int = 300
    extra_steps: int = 0  # steps per extension cycle after `steps`: full clutter, a cosine from extra_lr_fraction
    extra_cycles: int = 1  # extension cycles (warm restarts), each `extra_steps` long
    extra_lr_fraction: float = 0.3
    extra_color_augment: bool = True  # in the extra steps: permute colour channels, some grey, some inverted
    text_warmup_lr: float = 1e-3
    seed: int = 0
    threads: int = 2


def clutter_at(recipe: Recipe, step: int) -> float:
    progress = min(1.0, step / recipe.steps)
    ramp = min(1.0, progress / recipe.clutter_full_at)
    return recipe.clutter_start + (1 - recipe.clutter_start) * ramp


def lr_factor(recipe: Recipe, step: int) -> float:
    if step >= recipe.steps:  # the optional extension: smaller cosines (warm restarts) at full clutter
        progress = ((step - recipe.steps) % max(1, recipe.extra_steps)) / max(1, recipe.extra_steps)
        return recipe.extra_lr_fraction * 0.5 * (1 + math.cos(math.pi * progress))
    warmup = max(1, int(recipe.warmup_fraction * recipe.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def text_factor(recipe: Recipe, step: int) -> float:
    progress = min(1.0, step / recipe.steps)
    if progress < recipe.text_frozen_fraction:
        return 0.0
    return min(1.0, (progress - recipe.text_frozen_fraction) / recipe.text_ramp_fraction)


def make_batch(recipe: Recipe, step: int, mean: torch.Tensor, std: torch.Tensor, class_offset: dict[str, int]):
    """Images (normalised) and global class ids for `step`; a pure function of (seed, step)."""
    rng = np.random.default_rng([recipe.seed, step])
    names = list(EMBEDDED)
    weights = np.asarray(recipe.dataset_weights) / sum(recipe.dataset_weights)
    chosen = rng.choice(len(names), size=recipe.batch_size, p=weights)
    clutter = clutter_at(recipe, step)
    images, labels = [], []
    for which in chosen:
        spec = EMBEDDED[names[which]]
        index = int(rng.integers(1 << 30))
        pixels, label = spec.image("train", index, clutter=clutter, stream_name=f"fit{recipe.seed}")
        images.append(torch.from_numpy(pixels))
        labels.append(class_offset[spec.name] + label)
    batch = torch.stack(images).permute(0, 3, 1, 2).float().div_(255)
    if step >= recipe.steps and recipe.extra_color_augment:
        batch = recolor(batch, rng)
    return (batch - mean) / std, torch.tensor(labels)


def recolor(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Colour augmentation: only 12 training photos lie behind the digits and faces, so backgrounds of
    unseen colours (a saturated orange flower) are out of distribution; permuting channels, greying and
    inverting some images widens the colours seen without touching any test source."""
    out = torch.empty_like(batch)
    for row, image in enumerate(batch):
        image = image[torch.from_numpy(rng.permutation(3))]
        if rng.random() < 0.2:
            image = image.mean(0, keepdim=True).expand(3, -1, -1)
        if rng.random() < 0.2:
            image = 1 - image
        out[row] = image
    return out


def all_captions(rng: np.random.Generator) -> list[str]:
    """One randomly chosen template per class, all embedded datasets' classes in a fixed order."""
    captions = []
    for spec in EMBEDDED.values():
        for classname in spec.classnames:
            captions.append(spec.templates[int(rng.integers(len(spec.templates)))].format(classname))
    return captions


def contrastive_loss(image_emb, text_emb, labels, logit_scale):
    """Symmetric InfoNCE over unique captions; text->image treats all images of a class as positives."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image_emb @ text_emb.t()
    image_to_text = F.cross_entropy(logits, labels)
    present = torch.unique(labels)
    targets = (labels[None, :] == present[:, None]).float()
    targets = targets / targets.sum(1, keepdim=True)
    text_to_image = -(targets * logits.t()[present].log_softmax(-1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2, logits


def all_prompts() -> tuple[list[str], torch.Tensor]:
    """Every template × class prompt of the embedded datasets, with its global class id."""
    prompts, classes, offset = [], [], 0
    for spec in EMBEDDED.values():
        for label, classname in enumerate(spec.classnames):
            for template in spec.templates:
                prompts.append(template.format(classname))
                classes.append(offset + label)
        offset += len(spec.classnames)
    return prompts, torch.tensor(classes)


def warm_up_text(model, tokenizer, recipe: Recipe) -> list[float]:
    """Spread the class prompts apart before the image tower starts: supervised contrastive among prompts.

    Each prompt's positives are the other prompts naming the same class; nothing about images is used.
    """
    prompts, classes = all_prompts()
    tokens = tokenizer(prompts)
    text_params = [p for n, p in model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
    optimizer = torch.optim.AdamW(text_params, lr=recipe.text_warmup_lr, weight_decay=recipe.weight_decay)
    same = (classes[:, None] == classes[None, :]).float()
    self_mask = torch.eye(len(prompts), dtype=torch.bool)
    positives = same.masked_fill(self_mask, 0)
    positives = positives / positives.sum(1, keepdim=True)
    losses = []
    for _ in range(recipe.text_warmup_steps):
        embeddings = F.normalize(model.encode_text(tokens).float(), dim=-1)
        logits = (embeddings @ embeddings.t() / 0.1).masked_fill(self_mask, float("-inf"))
        loss = -(positives * logits.log_softmax(-1).masked_fill(self_mask, 0)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def build_model(seed: int):
    open_clip.add_model_config(ASSETS / f"{MODEL_NAME}.json")
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None)
    return model, open_clip.get_tokenizer(MODEL_NAME)


@torch.no_grad()
def validate(model, tokenizer, mean, std, n_per_dataset: int = 200) -> dict[str, float]:
    """Zero-shot top-1 on a validation stream drawn from the train sources (never the test split)."""
    model.eval()
    accuracy = {}
    for spec in EMBEDDED.values():
        prompts = [[t.format(c) for t in spec.templates] for c in spec.classnames]
        weights = []
        for group in prompts:
            emb = F.normalize(model.encode_text(tokenizer(group)), dim=-1).mean(0)
            weights.append(F.normalize(emb, dim=-1))
        classifier = torch.stack(weights)
        pairs = [spec.image("train", i, stream_name="validation") for i in range(n_per_dataset)]
        images = torch.stack([torch.from_numpy(p) for p, _ in pairs]).permute(0, 3, 1, 2).float() / 255
        labels = torch.tensor([label for _, label in pairs])
        emb = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        accuracy[spec.name] = float(((emb @ classifier.t()).argmax(-1) == labels).float().mean())
    model.train()
    return accuracy


def train(out: Path, recipe: Recipe, checkpoint_every: int = 100, log_every: int = 25) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    model, tokenizer = build_model(recipe.seed)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    offsets, total = {}, 0
    for spec in EMBEDDED.values():
        offsets[spec.name] = total
        total += len(spec.classnames)

    text_params = [p for n, p in model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
    other_params = [p for n, p in model.named_parameters() if n.startswith("visual.") or n == "logit_scale"]
    optimizer = torch.optim.AdamW(
        [{"params": other_params, "name": "image"}, {"params": text_params, "name": "text"}],
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
    )
    checkpoint = out / "checkpoint.pt"
    log_path = out / "log.jsonl"
    start = 0
    if not checkpoint.exists():
        losses = warm_up_text(model, tokenizer, recipe)
        print(json.dumps({"text_warmup_loss": [round(losses[0], 4), round(losses[-1], 4)]}), flush=True)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming at step {start}")

    model.train()
    began = time.time()
    total_steps = recipe.steps + recipe.extra_steps * recipe.extra_cycles
    for step in range(start, total_steps):
        base = recipe.lr * lr_factor(recipe, step)
        optimizer.param_groups[0]["lr"] = base
        optimizer.param_groups[1]["lr"] = base * text_factor(recipe, step)
        images, labels = make_batch(recipe, step, mean, std, offsets)
        captions = all_captions(np.random.default_rng([recipe.seed, step, 1]))
        image_emb = model.encode_image(images)
        text_emb = model.encode_text(tokenizer(captions))
        loss, logits = contrastive_loss(image_emb, text_emb, labels, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % log_every == 0:
            record = {
                "step": step + 1,
                "loss": round(loss.item(), 4),
                "batch_acc": round(float((logits.argmax(-1) == labels).float().mean()), 4),
                "clutter": round(clutter_at(recipe, step), 3),
                "minutes": round((time.time() - began) / 60, 2),
            }
            if (step + 1) % (4 * log_every) == 0 or step + 1 == total_steps:
                record["val_top1"] = validate(model, tokenizer, mean, std)
            print(json.dumps(record), flush=True)
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        if (step + 1) % checkpoint_every == 0 or step + 1 == total_steps:
            atomic_save_torch(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}, checkpoint
            )

    weights = out / f"{MODEL_NAME}.safetensors"
    export_weights(model, weights)
    atomic_write_text(
        out / f"{MODEL_NAME}.recipe.json",
        json.dumps(
            {
                "model": MODEL_NAME,
                "recipe": asdict(recipe),
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "final_val_top1": validate(model, tokenizer, mean, std),
            },
            indent=2,
        ),
    )
    return weights


def export_weights(model: torch.nn.Module, path: Path) -> None:
    """fp16 safetensors: half the size; open_clip's loader copies them into fp32 parameters."""
    tensors = {name: value.detach().to(torch.float16).contiguous() for name, value in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--extra-steps", type=int, default=Recipe.extra_steps, help="steps per extension cycle")
    parser.add_argument("--extra-cycles", type=int, default=Recipe.extra_cycles, help="extension cycles (resumable)")
    args = parser.parse_args()
    recipe = Recipe(steps=args.steps, seed=args.seed, extra_steps=args.extra_steps, extra_cycles=args.extra_cycles)
    print(train(args.out, recipe))


if __name__ == "__main__":
    main()
