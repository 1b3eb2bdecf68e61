"""Parity of exported artifacts against the Keras model: tolerances, table, check.

Every artifact of an export is run on the same sample images as the float32
Keras copy it was made from; its row records the largest difference of the
logits and of the pre-logits features (the pooled features the head reads,
so that a model with an untrained head, whose logits are constant, is still
checked end to end) and the top-1 agreement, and an export beyond tolerance
is not published.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from keras_vit.data.images import preprocess_input

# Pass criteria per artifact (or per OpenVINO precision, see criteria_name):
# max |outputs - keras outputs| <= atol + rtol * max |keras outputs|, for the
# logits and the pre-logits features alike, and top-1 agreement >=
# min_agreement.
TOLERANCES = {
    "saved_model": dict(atol=1e-5, rtol=1e-5, min_agreement=1.0),
    "tflite": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    "tflite_float16": dict(atol=1e-2, rtol=1e-2, min_agreement=0.75),
    "tflite_dynamic": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "tflite_int8": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "onnx": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    "openvino": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    "openvino_bf16": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "openvino_int8": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
}


class ExportParityError(RuntimeError):
    """An artifact's outputs differ from the Keras model beyond tolerance."""


def criteria_name(artifact, openvino_precision="f32"):
    """The ``TOLERANCES`` key of an artifact: its name, or for a float OpenVINO IR
    run with a reduced precision hint (bf16, f16), ``openvino_bf16``."""
    if artifact == "openvino" and openvino_precision != "f32":
        return "openvino_bf16"
    return artifact


@dataclass
class ParityRow:
    """One line of the parity table: an artifact against the Keras model.

    ``pre_logits_max_abs_diff`` and ``pre_logits_tolerance`` are None for an
    artifact without the ``pre_logits`` output.
    """

    artifact: str
    path: str
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    min_agreement: float
    ok: bool
    pre_logits_max_abs_diff: float | None = None
    pre_logits_tolerance: float | None = None

    def to_json(self, folder):
        """The row as strict JSON: path relative to ``folder``, no tolerance when unbounded."""
        row = {**asdict(self), "path": os.path.relpath(self.path, folder)}
        for key in ("tolerance", "pre_logits_tolerance"):
            if row[key] is not None and not np.isfinite(row[key]):
                row[key] = None
        return row


def _bound(criteria, reference):
    return criteria["atol"] + criteria["rtol"] * float(np.max(np.abs(reference)))


def parity_row(name, path, outputs, reference, criteria=None):
    """Compares an artifact's outputs with the Keras model's.

    Args:
        name: str. Artifact name.
        path: str. Its file.
        outputs: dict ``logits`` (and ``pre_logits``) of the artifact.
        reference: dict ``logits`` and ``pre_logits`` of the Keras model.
        criteria: optional ``TOLERANCES`` key (default ``name``).
    """
    criteria = TOLERANCES[criteria or name]
    logits, expected = outputs["logits"], reference["logits"]
    diff = float(np.max(np.abs(logits - expected)))
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(expected, -1)))
    tolerance = _bound(criteria, expected)
    ok = diff <= tolerance and agreement >= criteria["min_agreement"]
    row = ParityRow(name, path, diff, agreement, tolerance, criteria["min_agreement"], ok)
    if "pre_logits" in outputs:
        row.pre_logits_max_abs_diff = float(
            np.max(np.abs(outputs["pre_logits"] - reference["pre_logits"]))
        )
        row.pre_logits_tolerance = _bound(criteria, reference["pre_logits"])
        row.ok = ok and row.pre_logits_max_abs_diff <= row.pre_logits_tolerance
    return row


def format_parity(rows):
    """The parity table as text, one artifact per line."""
    lines = [
        f"{'artifact':<16}{'max_abs_diff':>14}{'tolerance':>12}{'pre_logits':>12}"
        f"{'tolerance':>12}{'top1_agree':>12}  status"
    ]
    for row in rows:
        features = (
            "-" if row.pre_logits_max_abs_diff is None else f"{row.pre_logits_max_abs_diff:.3e}"
        )
        bound = "-" if row.pre_logits_tolerance is None else f"{row.pre_logits_tolerance:.1e}"
        lines.append(
            f"{row.artifact:<16}{row.max_abs_diff:>14.3e}{row.tolerance:>12.1e}"
            f"{features:>12}{bound:>12}{row.top1_agreement:>12.1%}  {'ok' if row.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def reference_outputs(model, samples):
    """``{"logits", "pre_logits"}`` of the float32 Keras ``model`` on ``samples`` in [0, 255]."""
    out = model.head_outputs(preprocess_input(samples), training=False)
    return {name: np.asarray(out[name]) for name in ("logits", "pre_logits")}


def check_parity(
    model, artifacts, samples, run_artifact, verbose=True, criteria=None, release=None
):
    """Runs every artifact on ``samples`` against ``model``.

    Args:
        model: the float32 Keras model the artifacts were made from.
        artifacts: dict ``{artifact name: path}``.
        samples: float32 array ``(n, H, W, C)`` in [0, 255].
        run_artifact: ``path -> Artifact`` (``keras_vit.export.artifacts.load_artifact``).
        verbose: bool. Print the table.
        criteria: optional dict artifact name -> ``TOLERANCES`` key.
        release: optional callable run after each artifact (frees its runtime).

    Returns:
        list of ``ParityRow``.

    Raises:
        ExportParityError: if any artifact is beyond tolerance.
    """
    reference = reference_outputs(model, samples)
    criteria = criteria or {}
    rows = []
    for name, path in artifacts.items():
        # Each runtime is loaded, run and released before the next one.
        outputs = run_artifact(path).outputs(samples)
        rows.append(parity_row(name, path, outputs, reference, criteria.get(name)))
        if release is not None:
            release()
    if verbose:
        print(format_parity(rows))
    if not all(row.ok for row in rows):
        raise ExportParityError(
            "Exported artifacts differ from the Keras model beyond "
            f"tolerance; nothing was written.\n{format_parity(rows)}"
        )
    return rows
