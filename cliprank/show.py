"""The `show` pipeline: one figure of what every method keeps on chosen images, golden vs predictor.

Methods are solved for one budget exactly as `evaluate` solves them (`method_settings`), and their
rankings, predictor and tokens are loaded the same way (`load_resources`), so a patch map shows the very
setting a report row measured. The predictor's heatmap is drawn whenever a predictor is at hand (given,
or shipped with the embedded model), whether or not `predictor` is among the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cliprank.errors import CliprankError
from cliprank.evaluate import method_settings, row_classifier
from cliprank.methods.spec import MethodSpec
from cliprank.models.loading import LoadedModel
from cliprank.visualize.capture import Row, changes_tokens
from cliprank.visualize.images import dataset_batch, file_batch
from cliprank.visualize.patch_maps import budget_title, render_patch_maps


@dataclass
class ShowSettings:
    dataset: str
    methods: list[MethodSpec]
    budget: float | None
    out: Path
    indices: list[int] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    model: str = "cliprank-tiny"
    pretrained: str = "embedded"
    split: str = "test"
    dataset_root: Path | None = None
    rankings: list[Path] = field(default_factory=list)
    predictor: Path | None = None
    tokens: Path | None = None
    device: str = "cpu"
    quick_gelu: bool | None = None


def heatmap_predictor(model: LoadedModel, loaded, path: Path | None):
    """The predictor for the heatmap: the one methods use, else the given or shipped one, else None."""
    from cliprank.models import embedded
    from cliprank.predictor.io import default_predictor_path, load_predictor

    if loaded is not None:
        return loaded
    if path is not None:
        return load_predictor(path, model)
    if model.pretrained == embedded.TAG and embedded.has_predictor():
        return load_predictor(default_predictor_path(model), model)
    return None


def run_show(settings: ShowSettings) -> Path:
    """Draw the figure into `settings.out` (a PNG) and return its path."""
    from cliprank.data import load_dataset
    from cliprank.methods.base import method_class
    from cliprank.models.loading import load_model
    from cliprank.resources import load_resources
    from cliprank.zeroshot import zero_shot_classifier

    if not settings.indices and not settings.images:
        raise CliprankError("no image chosen; pass --index N[,N...] (images of --dataset) and/or --image FILE")
    oracles = [name for name, _ in settings.methods if "rankings" in method_class(name).requires]
    if settings.images and oracles:
        raise CliprankError(
            f"{', '.join(oracles)} needs the searched ranking of a dataset image, which an image file has none of; "
            "drop it from --method or show dataset images (--index)"
        )
    model = load_model(settings.model, settings.pretrained, device=settings.device, quick_gelu=settings.quick_gelu)
    dataset = load_dataset(
        settings.dataset, split=settings.split, root=settings.dataset_root, transform=model.preprocess
    )
    batches = []
    if settings.indices:
        batches.append(dataset_batch(dataset, settings.indices))
    if settings.images:
        batches.append(file_batch(settings.images, model.preprocess))
    resources = load_resources(model, settings.methods, settings.rankings, settings.predictor, settings.tokens)
    solved = method_settings(model, settings.methods, [settings.budget], resources)
    reference = zero_shot_classifier(model, dataset.classnames, dataset.templates)
    rows = [
        Row.of(row.spec, row.method, row_classifier(model, dataset, row, reference))
        for row in solved
        if changes_tokens(row.method)  # the unpruned model's prediction heads every image instead
    ]
    golden = resources.rankings.get(dataset.name, settings.split) if resources.rankings else None
    return render_patch_maps(
        settings.out,
        budget_title(model, settings.budget),
        model,
        batches,
        dataset,
        settings.split,
        reference,
        rows,
        golden,
        heatmap_predictor(model, resources.predictor, settings.predictor),
    )
