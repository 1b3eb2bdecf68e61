"""Parity of exported artifacts against the Keras model: tolerances, table, check.

Every artifact of an export is run on the same sample images as the float32
Keras copy it was made from; its row records the largest logit difference
and the top-1 agreement, and an export beyond tolerance is not published.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from keras_vit.data.images import preprocess_input

# Pass criteria per artifact: max |logits - keras logits| <= atol + rtol *
# max |keras logits|, and top-1 agreement >= min_agreement.
TOLERANCES = {
    "saved_model": dict(atol=1e-5, rtol=1e-5, min_agreement=1.0),
    "tflite": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    "tflite_float16": dict(atol=1e-2, rtol=1e-2, min_agreement=0.75),
    "tflite_dynamic": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "tflite_int8": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "onnx": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
}


class ExportParityError(RuntimeError):
    """An artifact's outputs differ from the Keras model beyond tolerance."""


@dataclass
class ParityRow:
    """One line of the parity table: an artifact against the Keras model."""

    artifact: str
    path: str
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    min_agreement: float
    ok: bool

    def to_json(self, folder):
        """The row as strict JSON: path relative to ``folder``, no tolerance when unbounded."""
        tolerance = self.tolerance if np.isfinite(self.tolerance) else None
        return {**asdict(self), "path": os.path.relpath(self.path, folder), "tolerance": tolerance}


def parity_row(name, path, logits, reference):
    """Compares an artifact's logits with the Keras model's (``TOLERANCES``)."""
    criteria = TOLERANCES[name]
    diff = float(np.max(np.abs(logits - reference)))
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))
    tolerance = criteria["atol"] + criteria["rtol"] * float(np.max(np.abs(reference)))
    ok = diff <= tolerance and agreement >= criteria["min_agreement"]
    return ParityRow(name, path, diff, agreement, tolerance, criteria["min_agreement"], ok)


def format_parity(rows):
    """The parity table as text, one artifact per line."""
    lines = [f"{'artifact':<16}{'max_abs_diff':>14}{'tolerance':>12}{'top1_agree':>12}  status"]
    for row in rows:
        lines.append(
            f"{row.artifact:<16}{row.max_abs_diff:>14.3e}{row.tolerance:>12.1e}"
            f"{row.top1_agreement:>12.1%}  {'ok' if row.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def check_parity(model, artifacts, samples, run_artifact, verbose=True):
    """Runs every artifact on ``samples`` against ``model``.

    Args:
        model: the float32 Keras model the artifacts were made from.
        artifacts: dict ``{artifact name: path}``.
        samples: float32 array ``(n, H, W, C)`` in [0, 255].
        run_artifact: ``path -> callable(images) -> logits``
            (``keras_vit.export.artifacts.load_artifact``).
        verbose: bool. Print the table.

    Returns:
        list of ``ParityRow``.

    Raises:
        ExportParityError: if any artifact is beyond tolerance.
    """
    reference = np.asarray(model(preprocess_input(samples), training=False))
    rows = [
        parity_row(name, path, run_artifact(path)(samples), reference)
        for name, path in artifacts.items()
    ]
    if verbose:
        print(format_parity(rows))
    if not all(row.ok for row in rows):
        raise ExportParityError(
            "Exported artifacts differ from the Keras model beyond "
            f"tolerance; nothing was written.\n{format_parity(rows)}"
        )
    return rows
