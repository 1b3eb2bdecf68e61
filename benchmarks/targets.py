"""The issue's performance targets as data, evaluated on merged result rows."""

from __future__ import annotations

# keras-vit's in-process paths: every ``ours`` row that is not an exported file.
OURS = (
    "keras-vit",
    "keras-vit-onednn",
    "keras-vit-onednn-bf16w",
    "keras-vit-frozen",
    "keras-vit-frozen-bf16w",
    "keras-vit-frozen-tfops",
    "keras-vit-frozen-graph",
    "keras-vit-frozen-xla",
    "keras-vit-frozen+onednn",
)
TF_PEERS = ("keras-hub", "keras-hub-xla", "vit-keras")
# OpenVINO converting the Hugging Face ONNX file or keras-vit's SavedModel:
# the faster of the two is the peer.
OPENVINO = ("openvino", "openvino-savedmodel")
ALL_PEERS = (*TF_PEERS, "hf-onnx", "hf-torch", "timm", *OPENVINO)
INT8_OURS = ("keras-vit-tflite", "keras-vit-openvino")


def _openvino_targets():
    """keras-vit in-process vs OpenVINO, and keras-vit's OpenVINO export vs OpenVINO's own."""
    targets = []
    for precision in ("fp32", "bf16"):
        for task, metric in (("infer_b16", "images_per_s"), ("infer_b1", "latency_ms")):
            what = "b16" if task == "infer_b16" else "b1 latency"
            targets.append(
                (
                    f"{precision} infer B/16 {what}: keras-vit in-process vs OpenVINO",
                    (OURS, task, precision, metric),
                    (OPENVINO, task, precision, metric),
                    1.0,
                )
            )
            targets.append(
                (
                    f"{precision} infer B/16 {what}: keras-vit's OpenVINO export vs OpenVINO's own",
                    (("keras-vit-openvino",), task, precision, metric),
                    (OPENVINO, task, precision, metric),
                    0.97,  # equal within the noise of a shared machine
                )
            )
    for task, metric in (("infer_b16", "images_per_s"), ("infer_b1", "latency_ms")):
        targets.append(
            (
                f"int8 infer B/16 {'b16' if task == 'infer_b16' else 'b1 latency'}: "
                "fastest keras-vit int8 path vs OpenVINO NNCF int8",
                (INT8_OURS, task, "int8", metric),
                (("openvino",), task, "int8", metric),
                None,
            )
        )
    return tuple(targets)


# (name, (our impls, task, precision, metric), (their impls, task, precision,
#  metric), required ratio). The ratio is ours/theirs for images_per_s and
# theirs/ours for latency_ms and peak_rss_mb, so >= required is always good;
# of several impls on a side the best one counts.
TARGETS = (
    (
        "fp32 infer B/16 b16 vs fastest TF peer",
        (OURS, "infer_b16", "fp32", "images_per_s"),
        (TF_PEERS, "infer_b16", "fp32", "images_per_s"),
        1.05,
    ),
    (
        "fp32 infer B/16 b1 latency vs onnxruntime peer",
        (OURS, "infer_b1", "fp32", "latency_ms"),
        (("hf-onnx",), "infer_b1", "fp32", "latency_ms"),
        1.0,
    ),
    (
        "bf16 infer B/16 b16 vs fastest fp32 peer",
        (OURS, "infer_b16", "bf16", "images_per_s"),
        (ALL_PEERS, "infer_b16", "fp32", "images_per_s"),
        1.6,
    ),
    (
        "int8 TFLite infer B/16 b16 vs fastest fp32 peer",
        (("keras-vit-tflite",), "infer_b16", "int8", "images_per_s"),
        (ALL_PEERS, "infer_b16", "fp32", "images_per_s"),
        None,
    ),
    (
        "fp32 train S/16 b16 vs keras-hub",
        (OURS, "train", "fp32", "images_per_s"),
        (("keras-hub",), "train", "fp32", "images_per_s"),
        1.2,
    ),
    (
        "fp32 train S/16 b16 vs keras-hub with XLA",
        (OURS, "train", "fp32", "images_per_s"),
        (("keras-hub-xla",), "train", "fp32", "images_per_s"),
        None,
    ),
    (
        "mixed_bfloat16 train S/16 b16 vs keras-hub fp32",
        (OURS, "train", "bf16", "images_per_s"),
        (("keras-hub",), "train", "fp32", "images_per_s"),
        1.8,
    ),
    (
        "fp32 infer B/16 b1 latency: keras-vit's TFLite export (XNNPACK) vs onnxruntime peer",
        (("keras-vit-tflite",), "infer_b1", "fp32", "latency_ms"),
        (("hf-onnx",), "infer_b1", "fp32", "latency_ms"),
        1.0,
    ),
    (
        "fp32 infer B/16 b1 latency: keras-vit's ONNX export vs onnxruntime peer",
        (("keras-vit-onnx",), "infer_b1", "fp32", "latency_ms"),
        (("hf-onnx",), "infer_b1", "fp32", "latency_ms"),
        None,
    ),
    (
        "SavedModel b16 vs in-process Keras XLA",
        (("keras-vit-savedmodel",), "infer_b16", "fp32", "images_per_s"),
        (("keras-vit",), "infer_b16", "fp32", "images_per_s"),
        0.95,
    ),
    (
        "SavedModel (XLA-compiled) b16 vs in-process Keras XLA",
        (("keras-vit-savedmodel-xla",), "infer_b16", "fp32", "images_per_s"),
        (("keras-vit",), "infer_b16", "fp32", "images_per_s"),
        0.95,
    ),
    (
        "train peak RSS fp32: keras-hub / keras-vit",
        (OURS, "train", "fp32", "peak_rss_mb"),
        (("keras-hub",), "train", "fp32", "peak_rss_mb"),
        1.0,
    ),
    (
        "fp32 infer B/16 b16 vs fastest TF/PyTorch/ONNX Runtime peer",
        (OURS, "infer_b16", "fp32", "images_per_s"),
        ((*TF_PEERS, "hf-onnx", "hf-torch", "timm"), "infer_b16", "fp32", "images_per_s"),
        1.0,
    ),
    *_openvino_targets(),
)

_LOWER_IS_BETTER = ("latency_ms", "peak_rss_mb")


def _best(rows, impls, task, precision, metric):
    """Best ok row among ``impls`` for a task and precision, or None.

    A row counts for the precision it was asked for and for the one it
    computed in (``computes_in``): OpenVINO's bf16-hinted row on a CPU
    without bf16 is the same compiled program as its f32 row (the same
    layers, kernels and precisions in the runtime model), so it is one
    more measurement of that program.
    """
    candidates = [
        r
        for r in rows
        if r["impl"] in impls
        and r["task"] == task
        and precision in (r["precision"], r.get("computes_in"))
        and r["status"] == "ok"
    ]
    if not candidates:
        return None
    pick = min if metric in _LOWER_IS_BETTER else max
    return pick(candidates, key=lambda r: r[metric])


def _named(row, precision, value):
    """``"impl value"``, with the row's own precision where it was asked for another one."""
    asked = "" if row["precision"] == precision else f" ({row['precision']} hint)"
    return f"{row['impl']}{asked} {value}"


def evaluate_targets(rows, floors=None):
    """Measured ratio of every target whose both sides ran.

    Args:
        rows: merged result rows.
        floors: optional ``{"task precision": floor row}`` from
            ``benchmarks/gemm_floor.py``: each required speed is then also
            given as a share of the GEMM-only floor (over 1: out of reach).

    Returns:
        list of dicts: ``target``, ``ours`` / ``theirs`` (impl and value),
        ``ratio``, ``required`` (None: reported only), ``met``,
        ``required_share_of_floor`` (None when not applicable) and, against
        OpenVINO, ``theirs_share_of_openvino_floor``: how close OpenVINO
        runs to its own GEMM-only floor (``gemm_floor.py --runtime openvino``);
        ``computes_in``: ``{"ours": ..., "theirs": ...}`` for a side that ran
        another precision than the target names (OpenVINO's bf16 hint on a
        CPU without bf16), empty otherwise. A side's row asked for another
        precision than the target's is named with it: ``"openvino (bf16
        hint) 4.447"`` for an fp32 target.
    """
    results = []
    for name, ours_side, theirs_side, required in TARGETS:
        ours = _best(rows, *ours_side)
        theirs = _best(rows, *theirs_side)
        if ours is None or theirs is None:
            continue
        metric = ours_side[3]
        a, b = ours[metric], theirs[metric]
        ratio = b / a if metric in _LOWER_IS_BETTER else a / b
        results.append(
            dict(
                target=name,
                metric=metric,
                ours=_named(ours, ours_side[2], a),
                theirs=_named(theirs, theirs_side[2], b),
                ratio=round(ratio, 3),
                required=required,
                met=None if required is None else ratio >= required,
                required_share_of_floor=_share_of_floor(floors, ours_side, b, required),
                theirs_share_of_openvino_floor=_openvino_share(floors, theirs_side, b),
                computes_in={
                    who: row["computes_in"]
                    for who, row, side in (
                        ("ours", ours, ours_side),
                        ("theirs", theirs, theirs_side),
                    )
                    if row.get("computes_in", side[2]) != side[2]
                },
            )
        )
    return results


def _openvino_share(floors, theirs_side, theirs):
    """OpenVINO's speed over its own GEMM-only floor's (``None`` if not applicable)."""
    impls, task, precision, metric = theirs_side
    floor = (floors or {}).get(f"{task} {precision} openvino") or {}
    if not set(impls) <= set(OPENVINO) or floor.get("status") != "ok":
        return None
    if metric == "latency_ms":
        return round(floor["latency_ms"] / theirs, 3)
    return round(theirs / floor["images_per_s"], 3)


def _share_of_floor(floors, ours_side, theirs, required):
    """The required speed over the GEMM-only floor's speed (``None`` if not applicable).

    The floors time TensorFlow's kernels, so they apply to the in-process
    implementations (``OURS``) only, not to exports run by other runtimes.
    """
    impls, task, precision, metric = ours_side
    floor = (floors or {}).get(f"{task} {precision}") or {}
    if required is None or metric == "peak_rss_mb" or floor.get("status") != "ok":
        return None
    if not set(impls) <= set(OURS):
        return None
    if metric == "latency_ms":  # floor latency over the latency needed
        return round(floor["latency_ms"] / (theirs / required), 3)
    return round(theirs * required / floor["images_per_s"], 3)


def format_targets(results):
    """Plain-text lines ``target: ratio (required) ours vs theirs``."""
    lines = ["Targets (ratio >= required is good):"]
    for r in results:
        verdict = "info" if r["met"] is None else ("MET" if r["met"] else "missed")
        need = "" if r["required"] is None else f">= {r['required']}"
        share = r.get("required_share_of_floor")
        floor = "" if share is None else f" needs {100 * share:.0f} % of the GEMM-only floor"
        theirs = r.get("theirs_share_of_openvino_floor")
        if theirs is not None:
            floor += f"; OpenVINO runs at {100 * theirs:.0f} % of its own GEMM-only floor"
        for side, precision in r.get("computes_in", {}).items():
            floor += f"; {side} computed in {precision}"
        lines.append(
            f"  {r['target']:52} {r['ratio']:6.3f} {need:8} {verdict:6} "
            f"[{r['ours']} vs {r['theirs']}]{floor}"
        )
    return "\n".join(lines)
