"""Class names and prompt templates: where they come from, and one placeholder convention.

Zero-shot accuracy depends on the exact wording of the prompts, so cliprank uses the community's
wording rather than its own: CLIP_benchmark's English class names and templates (OpenAI's prompts) for
the benchmark datasets, open_clip's copy of OpenAI's ImageNet names and 80 templates for ImageNet.

CLIP_benchmark's tables are read from the JSON files of an installed `clip_benchmark` package without
importing it (importing it pulls transformers and friends). Installing it without its dependencies is
enough: `pip install --no-deps clip-benchmark==1.6.2`.

Convention: every template cliprank hands out has the placeholder `{c}` (CLIP_benchmark's), and a
prompt is `template.format(c=classname)`; templates written with a bare `{}` are rewritten on load.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import string
from pathlib import Path

from cliprank.errors import CliprankError

PLACEHOLDER = "{c}"
CLIP_BENCHMARK_INSTALL = "pip install --no-deps clip-benchmark==1.6.2"
# CLIP_benchmark falls back to ImageNet's templates for datasets it has none for; so does cliprank.
FALLBACK_TEMPLATES_OF = "imagenet1k"


def normalise_template(template: str) -> str:
    """`template` with its placeholder spelled `{c}`; no placeholder, or any other `{...}` field, is an error."""
    template = template.strip()
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    if fields and all(field in ("", "c") for field in fields):
        return template.replace("{}", PLACEHOLDER)
    raise CliprankError(
        f"template {template!r} must contain the class-name placeholder {{c}} (or {{}}) and no other {{...}} field"
    )


def format_prompt(template: str, classname: str) -> str:
    return template.format(c=classname)


def clean_classname(name: str) -> str:
    """Folder-style names to words: `golden_retriever` -> `golden retriever`."""
    return name.replace("_", " ").strip()


def imagenet_classnames() -> list[str]:
    import open_clip  # imported on use: it costs seconds and most datasets never need it

    return list(open_clip.IMAGENET_CLASSNAMES)


def imagenet_templates() -> list[str]:
    """OpenAI's 80 ImageNet templates (open_clip stores them as functions of the class name)."""
    import open_clip  # (see above)

    return [normalise_template(make(PLACEHOLDER)) for make in open_clip.OPENAI_IMAGENET_TEMPLATES]


def _clip_benchmark_folder() -> Path | None:
    """The installed package's `datasets` folder; `find_spec` of a top-level name does not import it."""
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets"


@functools.cache
def _clip_benchmark_tables() -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    folder = _clip_benchmark_folder()
    classnames_file = folder / "en_classnames.json" if folder else Path()
    templates_file = folder / "en_zeroshot_classification_templates.json" if folder else Path()
    if not (classnames_file.is_file() and templates_file.is_file()):
        raise CliprankError(
            "the class names and prompts of the CLIP_benchmark datasets come from the clip-benchmark package, "
            f"which is not installed; install it with `{CLIP_BENCHMARK_INSTALL}`"
        )
    classnames = json.loads(classnames_file.read_text(encoding="utf-8"))
    templates = json.loads(templates_file.read_text(encoding="utf-8"))
    try:
        version = importlib.metadata.version("clip-benchmark")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout on sys.path
        version = "unknown version"
    return classnames, templates, f"clip_benchmark {version}"


def clip_benchmark_available() -> bool:
    try:
        _clip_benchmark_tables()
    except CliprankError:
        return False
    return True


def clip_benchmark_source() -> str:
    """What to record as the origin of CLIP_benchmark prompts, e.g. `clip_benchmark 1.6.2`."""
    return _clip_benchmark_tables()[2]


def clip_benchmark_classnames(name: str) -> list[str] | None:
    """CLIP_benchmark's curated class names for `name`, or None where it uses the dataset's own."""
    names = _clip_benchmark_tables()[0].get(name)
    return list(names) if names is not None else None


def clip_benchmark_templates(name: str) -> list[str]:
    """CLIP_benchmark's templates for `name` (ImageNet's when it has none, as CLIP_benchmark does)."""
    table = _clip_benchmark_tables()[1]
    return [normalise_template(t) for t in table.get(name, table[FALLBACK_TEMPLATES_OF])]
