"""Accuracy of the reduced-precision paths next to float32.

    python benchmarks/accuracy.py --json benchmarks/results/accuracy.json
    python benchmarks/accuracy.py --quick

Two measurements, both on real data shipped in packages:

1. Digits (scikit-learn's 1,797 real 8x8 scans): a small ViT is trained in
   float32 with two seeds and in ``mixed_bfloat16`` with the first seed;
   the per-epoch loss curves show whether mixed precision trains like
   float32 (the two float32 seeds give the noise). The float32 model then
   runs through every reduced-precision inference path (bf16, TFLite
   dynamic-range int8, TFLite full int8) on the test split.
2. Photos (scikit-image's sample photos, random crops at 224), two models:
   - ViT-Ti/16 trained in float32 to tell which photo a crop comes from
     (13 classes), measured on other crops than it was trained on: a
     trained model on real photos, 12 blocks deep;
   - ViT-B/16 with random weights (official initialisation, random head).
     Random weights give small logit margins, so its top-1 agreement is a
     pessimistic bound.
   Both in float32, bf16 and TFLite dynamic-range int8.

Both measurements also run keras-vit's OpenVINO export (``--format openvino``)
with the bf16 precision hint and its NNCF int8 file (calibrated on training
digits, or on other photo crops than those measured), compiled the way
``benchmarks/run.py`` times them.

For every path: max |logits - float32 logits| (and the float32 logits'
scale), top-1 agreement with float32, the largest float32 top-1 margin
among the inputs whose top-1 changed (how close to a tie a flip needs to
be) and, where labels exist, the accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.openvino_impls import INT8_HINT, calibration_photos  # noqa: E402
from keras_vit.atomic import write_json_atomic  # noqa: E402
from keras_vit.data import load_digits  # noqa: E402
from keras_vit.data.images import preprocess_input  # noqa: E402
from keras_vit.export.tflite import convert_tflite  # noqa: E402
from keras_vit.model.factories import build_variant
from keras_vit.model.vit import ViT  # noqa: E402

DIGITS_VIT = dict(
    image_size=8,
    patch_size=2,
    hidden_size=64,
    num_layers=4,
    num_heads=4,
    mlp_dim=128,
    num_classes=10,
    channels=1,
)
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "camera",
    "rocket",
    "coins",
    "moon",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "grass",
    "brick",
    "clock",
)
BATCH = 16
TRAIN_CROPS_PER_PHOTO = 40
PHOTO_EPOCHS = 6


def photo_crops(crops_per_photo, size=224, seed=0):
    """Random crops of scikit-image's sample photos.

    Returns ``(pixels, labels)``: float32 ``(n, size, size, 3)`` in [0, 255]
    and int ``(n,)``, the index in ``PHOTOS`` of the photo each crop is from.
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = np.asarray(getattr(skimage.data, name)(), dtype="float32")
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        photo = photo[..., :3]
        height, width = photo.shape[:2]
        for _ in range(crops_per_photo):
            side = int(min(height, width) * rng.uniform(0.4, 1.0))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = photo[top : top + side, left : left + side]
            images.append(tf.image.resize(crop, (size, size), antialias=True).numpy())
            labels.append(label)
    return np.clip(np.stack(images), 0.0, 255.0), np.array(labels)


def compare(reference, logits, labels=None):
    """Agreement of ``logits`` with the float32 ``reference`` (both ``(n, classes)``)."""
    flipped = logits.argmax(-1) != reference.argmax(-1)
    top2 = np.sort(reference, axis=-1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    row = dict(
        max_abs_diff=float(np.abs(logits - reference).max()),
        reference_max_abs=float(np.abs(reference).max()),
        top1_agreement=float(1.0 - flipped.mean()),
        largest_flipped_margin=float(margins[flipped].max()) if flipped.any() else 0.0,
    )
    if labels is not None:
        row["accuracy"] = float((logits.argmax(-1) == labels).mean())
    return row


def keras_logits(model, pixels):
    """Logits of a Keras model on pixels in [0, 255], in batches (graph mode)."""
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return np.concatenate(
        [
            forward(tf.constant(preprocess_input(pixels[i : i + BATCH]))).numpy()
            for i in range(0, len(pixels), BATCH)
        ]
    )


def bfloat16_copy(model, policy="mixed_bfloat16"):
    """The same architecture and weights under a bf16 policy (``"bfloat16"``: bf16 weights)."""
    config = {**model.get_config(), "dtype": policy}
    copy = ViT.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def tflite_logits(model, pixels, quantization, workdir, representative=None):
    """Logits of ``model`` converted by ``keras_vit.export.tflite`` and run with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(workdir, f"{model.name}_{quantization}.tflite")
    convert_tflite(model, path, quantization, representative_images=representative)
    runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner(
        "serving_default"
    )
    return np.concatenate(
        [
            runner(images=pixels[i : i + BATCH].astype("float32"))["logits"]
            for i in range(0, len(pixels), BATCH)
        ]
    )


def openvino_logits(model, pixels, quantization, precision, workdir, representative=None):
    """Logits of ``model`` exported by ``keras_vit.export.openvino``, compiled with a hint."""
    from keras_vit.export.openvino import compile_openvino, convert_openvino

    path = os.path.join(workdir, f"{model.name}_{quantization}.xml")
    if not os.path.exists(path):
        convert_openvino(model, path, quantization, representative)
    compiled = compile_openvino(path, precision)
    return np.concatenate(
        [
            compiled(pixels[i : i + BATCH].astype("float32"))[compiled.output("logits")]
            for i in range(0, len(pixels), BATCH)
        ]
    )


def precision_paths(model, pixels, workdir, quantizations, labels=None, representative=None):
    """``{path: comparison with float32}``: bf16, the TFLite quantizations and OpenVINO.

    ``bf16_weights``: the model under the ``bfloat16`` policy (weights and
    residual stream in bf16, ``keras-vit-onednn-bf16w`` in ``run.py``).
    OpenVINO: the float32 IR with the bf16 hint, and, with ``representative``
    images, the NNCF int8 IR with ``openvino_impls.INT8_HINT``.
    """
    reference = keras_logits(model, pixels)
    results = {"fp32": compare(reference, reference, labels)}
    results["bf16"] = compare(reference, keras_logits(bfloat16_copy(model), pixels), labels)
    logits = keras_logits(bfloat16_copy(model, "bfloat16"), pixels)
    results["bf16_weights"] = compare(reference, np.asarray(logits, "float32"), labels)
    for quantization in quantizations:
        logits = tflite_logits(model, pixels, quantization, workdir, representative)
        results[f"tflite_{quantization}"] = compare(reference, logits, labels)
    logits = openvino_logits(model, pixels, "float32", "bf16", workdir)
    results["openvino_bf16"] = compare(reference, logits, labels)
    if representative is not None:
        logits = openvino_logits(model, pixels, "int8", INT8_HINT, workdir, representative)
        results["openvino_int8"] = compare(reference, logits, labels)
    return results


def train_digits(policy, seed, epochs, data):
    """Trains the digits ViT; returns ``(model, per-epoch losses, test loss, test accuracy)``."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = ViT(**DIGITS_VIT, dtype=policy, name=f"digits_{policy}_{seed}")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        preprocess_input(x_train.astype("float32")),
        y_train,
        batch_size=64,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        validation_data=(preprocess_input(x_test.astype("float32")), y_test),
    ).history
    return model, dict(
        train_loss=[round(v, 4) for v in history["loss"]],
        test_loss=[round(v, 4) for v in history["val_loss"]],
        test_accuracy=round(history["val_accuracy"][-1], 4),
    )


def digits_report(epochs, workdir):
    """Loss curves (fp32 x 2 seeds, mixed_bfloat16) and inference paths on digits."""
    data = load_digits()
    fp32_model, fp32 = train_digits("float32", 0, epochs, data)
    _, fp32_other_seed = train_digits("float32", 1, epochs, data)
    _, bf16 = train_digits("mixed_bfloat16", 0, epochs, data)
    curves = {"fp32_seed0": fp32, "fp32_seed1": fp32_other_seed, "mixed_bfloat16_seed0": bf16}

    def gap(a, b):
        return round(max(abs(x - y) for x, y in zip(a["test_loss"], b["test_loss"])), 4)

    (x_train, _), (x_test, y_test) = data
    paths = precision_paths(
        fp32_model,
        x_test.astype("float32"),
        workdir,
        ("dynamic", "int8"),
        labels=y_test,
        representative=x_train[:200].astype("float32"),
    )
    return dict(
        model=DIGITS_VIT,
        epochs=epochs,
        curves=curves,
        max_test_loss_gap_bf16_vs_fp32=gap(bf16, fp32),
        max_test_loss_gap_fp32_seeds=gap(fp32_other_seed, fp32),
        inference=paths,
    )


def train_photos(epochs, crops_per_photo):
    """ViT-Ti/16 trained in float32 to tell which photo a crop is from.

    Returns ``(model, train accuracy)``; its training crops are drawn with
    another seed than the crops it is measured on.
    """
    pixels, labels = photo_crops(crops_per_photo, seed=1)
    keras.utils.set_random_seed(0)
    model = build_variant("Ti/16", num_classes=len(PHOTOS), dtype="float32")
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        preprocess_input(pixels), labels, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0
    ).history
    return model, round(history["accuracy"][-1], 4)


def photos_report(crops_per_photo, epochs, workdir):
    """bf16, dynamic-range int8 and OpenVINO against float32 on photo crops: trained Ti/16,
    random B/16 (OpenVINO int8 calibrated on other crops)."""
    pixels, labels = photo_crops(crops_per_photo)
    calibration = calibration_photos(224)
    trained, train_accuracy = train_photos(epochs, TRAIN_CROPS_PER_PHOTO)
    keras.utils.set_random_seed(0)
    random_b16 = build_variant("B/16", dtype="float32")
    rng = np.random.default_rng(0)
    kernel_shape = random_b16.head.kernel.shape
    random_b16.head.kernel.assign(rng.normal(0, 1 / np.sqrt(random_b16.hidden_size), kernel_shape))
    return dict(
        images=len(pixels),
        trained=dict(
            model=f"ViT-Ti/16 trained {epochs} epochs on {TRAIN_CROPS_PER_PHOTO} other crops "
            f"per photo to tell the {len(PHOTOS)} photos apart",
            train_accuracy=train_accuracy,
            inference=precision_paths(
                trained, pixels, workdir, ("dynamic",), labels=labels, representative=calibration
            ),
        ),
        random=dict(
            model="ViT-B/16 random weights, random head",
            inference=precision_paths(
                random_b16, pixels, workdir, ("dynamic",), representative=calibration
            ),
        ),
    )


def format_report(report):
    """Plain-text summary: loss curves gap and one line per inference path."""
    lines = []
    digits = report["digits"]
    lines.append(
        f"digits loss curves ({digits['epochs']} epochs): max test-loss gap bf16 vs fp32 "
        f"{digits['max_test_loss_gap_bf16_vs_fp32']}, fp32 seed 0 vs seed 1 "
        f"{digits['max_test_loss_gap_fp32_seeds']}"
    )
    for name, curve in digits["curves"].items():
        lines.append(
            f"  {name:22} test acc {curve['test_accuracy']:.4f} test loss {curve['test_loss']}"
        )
    photos = report["photos"]
    for data, section in (
        ("digits", digits),
        ("photos", photos["trained"]),
        ("photos-random", photos["random"]),
    ):
        for path, row in section["inference"].items():
            acc = f" accuracy {row['accuracy']:.4f}" if "accuracy" in row else ""
            lines.append(
                f"{data:13} {path:15} top-1 agreement {row['top1_agreement']:.4f} "
                f"max|diff| {row['max_abs_diff']:.4g} (logit scale {row['reference_max_abs']:.3g}) "
                f"largest flipped margin {row['largest_flipped_margin']:.3g}{acc}"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the report to this file")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and photo crops")
    parser.add_argument(
        "--photo-crops", type=int, help="random crops per photo (default 6, quick 1)"
    )
    args = parser.parse_args(argv)
    epochs, photo_epochs, crops = (4, 1, 1) if args.quick else (30, PHOTO_EPOCHS, 6)
    crops = args.photo_crops or crops
    with tempfile.TemporaryDirectory(prefix="keras_vit_accuracy_") as workdir:
        report = dict(
            digits=digits_report(epochs, workdir),
            photos=photos_report(crops, photo_epochs, workdir),
        )
    print(format_report(report))
    if args.json:
        write_json_atomic(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
