"""Where a report's patch maps live, so the code that draws them and `report.md` that links them agree."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath

PATCH_MAPS_DIR = "patch_maps"


def patch_maps_file(model: str, pretrained: str, dataset: str) -> str:
    """The figure of one model on one dataset, relative to the report's folder (a `/`-separated path).

    Readable names first; a short hash of the full triple keeps two checkpoints with the same file name,
    or two image folders with the same last component, apart.
    """
    readable = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part) for part in (dataset, model, PurePath(pretrained).name))
    digest = hashlib.sha256(json.dumps([model, pretrained, dataset]).encode()).hexdigest()[:8]
    return f"{PATCH_MAPS_DIR}/{readable}-{digest}.png"
