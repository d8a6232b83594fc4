"""The `show` pipeline: one figure of what every method keeps on chosen images, golden vs predictor.

Methods are solved for one budget exactly as `evaluate` solves them (`solve_rows`), and their
rankings, predictor and tokens are loaded the same way (`load_resources`), so a patch map shows the very
setting a report row measured. The predictor's heatmap is drawn whenever a predictor is at hand (given,
or shipped with the embedded model), whether or not `predictor` is among the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cliprank.data import load_dataset
from cliprank.errors import CliprankError
from cliprank.methods.budget import solve_rows
from cliprank.methods.registry import expand_all, is_all, method_class
from cliprank.methods.spec import MethodSpec
from cliprank.models import embedded
from cliprank.models.loading import LoadedModel
from cliprank.resources import SOURCES, ResourceFiles, load_resources
from cliprank.visualize.capture import Row, changes_tokens
from cliprank.visualize.images import dataset_batch, file_batch
from cliprank.visualize.patch_maps import budget_title, render_patch_maps
from cliprank.zeroshot import zero_shot_classifier


@dataclass
class ShowJob:
    dataset: str
    methods: list[MethodSpec]  # or [("all", {})]
    budget: float | None
    out: Path
    indices: list[int] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    split: str = "test"
    dataset_root: Path | None = None
    files: ResourceFiles = field(default_factory=ResourceFiles)
    skip_unreadable: bool = False  # indices count the readable files only, as a search that skipped did


def heatmap_predictor(model: LoadedModel, loaded, files: ResourceFiles):
    """The predictor for the heatmap: the one methods use, else the given or shipped one, else None."""
    if loaded is not None:
        return loaded
    source = SOURCES["predictor"]
    paths = files.given("predictor") or (source.shipped() if model.pretrained == embedded.TAG else [])
    return source.load(paths, model) if paths else None


def run_show(model: LoadedModel, job: ShowJob) -> Path:
    """Draw the figure into `job.out` (a PNG) and return its path."""
    if not job.indices and not job.images:
        raise CliprankError("no image chosen; pass --index N[,N...] (images of --dataset) and/or --image FILE")
    methods = job.methods
    if job.images:
        oracles = [name for name, _ in methods if not is_all(methods) and method_class(name).oracle]
        if oracles:
            raise CliprankError(
                f"{', '.join(oracles)} needs the searched ranking of a dataset image, which an image file has none "
                "of; drop it from --method or show dataset images (--index)"
            )
    dataset = load_dataset(
        job.dataset,
        split=job.split,
        root=job.dataset_root,
        transform=model.preprocess,
        skip_unreadable=job.skip_unreadable,
    )
    batches = []
    if job.indices:
        batches.append(dataset_batch(dataset, job.indices))
    if job.images:
        batches.append(file_batch(job.images, model.preprocess))
    resources = load_resources(model, methods, job.files)
    specs = expand_all(methods, resources)
    if job.images:  # image files have no golden ranking: `all` leaves the oracle out
        specs = [(name, knobs) for name, knobs in specs if not method_class(name).oracle]
    reference = zero_shot_classifier(model, dataset.classnames, dataset.templates)
    rows = [
        Row.of(row.spec, row.method, row.method.text_classifier(model, dataset.classnames, reference))
        for row in solve_rows(model.arch, specs, [job.budget], resources)
        if changes_tokens(row.method)  # the unpruned model's prediction heads every image instead
    ]
    golden = resources.rankings.get(dataset.name, job.split) if resources.rankings else None
    return render_patch_maps(
        job.out,
        budget_title(model, job.budget),
        model,
        batches,
        dataset,
        job.split,
        reference,
        rows,
        golden,
        heatmap_predictor(model, resources.predictor, job.files),
    )
