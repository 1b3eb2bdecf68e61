"""Writing benchmark results."""

from __future__ import annotations

import json
import os


def write_json(path, result):
    """Writes ``result`` as indented JSON to ``path`` atomically (temporary file, then rename)."""
    partial = f"{path}.partial"
    with open(partial, "w") as file:
        json.dump(result, file, indent=1)
    os.replace(partial, path)
