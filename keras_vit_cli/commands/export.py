"""``keras-vit export``: SavedModel (TF Serving), TFLite, ONNX and OpenVINO, checked.

    keras-vit export --model ViT_B16 --weights ckpt.npz --num-classes 10 \\
        --image-size 384 --posemb-interpolation official \\
        --format saved_model,tflite,onnx,openvino --output exports

writes ``exports/vit_b16/<version>/`` and prints the parity table of every
artifact against the Keras model; the exit code is 1 beyond tolerance (and
nothing is written then). Missing optional dependencies, a bad model name
and an unusable ``--output`` are reported before the model is even loaded.
"""

from __future__ import annotations

from keras_vit_cli._common import (
    EXPORT_FORMATS,
    MAX_IMAGE_PIXELS,
    OPENVINO_PRECISIONS,
    POSEMB_INTERPOLATIONS,
    QUANTIZATIONS,
    add_image_size_argument,
    add_model_source_arguments,
    comma_list,
    load_model,
    positive_int,
    read_labels,
)

NAME = "export"
HELP = "Export a ViT to SavedModel (TF Serving), TFLite, ONNX and OpenVINO, with a parity check."


def add_arguments(parser):
    add_model_source_arguments(parser)
    add_image_size_argument(
        parser, "Export size (default: the model's; the position embeddings are resized once):"
    )
    parser.add_argument(
        "--posemb-interpolation",
        choices=POSEMB_INTERPOLATIONS,
        default=None,
        help="Resize method of the position embeddings (default: the model's).",
    )
    parser.add_argument(
        "--format",
        type=comma_list(EXPORT_FORMATS),
        default=["saved_model"],
        help="Comma-separated: saved_model,tflite,onnx,openvino (default saved_model; "
        "the SavedModel is always written).",
    )
    parser.add_argument(
        "--output", required=True, help="Base folder: OUTPUT/<model-name>/<version>/."
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="Folder / TF Serving name: letters, digits, '.', '_', '-' "
        "(default: the model's name).",
    )
    parser.add_argument(
        "--version", type=positive_int, default=None, help="Version number (default: next free)."
    )
    parser.add_argument(
        "--dynamic-resolution",
        action="store_true",
        help="SavedModel, TFLite, ONNX and OpenVINO take any height/width the patch "
        "size divides (position embeddings resized in the graph).",
    )
    parser.add_argument(
        "--quantize",
        type=comma_list(QUANTIZATIONS),
        default=[],
        help="Extra files, comma-separated: float16, dynamic (TFLite), int8 (TFLite "
        "full-integer and OpenVINO NNCF, calibrated on --representative-data).",
    )
    parser.add_argument(
        "--representative-data",
        default=None,
        help="Calibration images for int8 (also parity samples): any data source "
        "(a folder of images, with or without class subfolders; 'digits'; tfds:NAME; TFRecords).",
    )
    parser.add_argument(
        "--calibration-images",
        type=positive_int,
        default=200,
        help="At most this many representative images (default 200).",
    )
    parser.add_argument("--labels", default=None, help="Text file with one class name per line.")
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="Classes in the top-k outputs."
    )
    parser.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (<= 18).")
    parser.add_argument(
        "--openvino-precision",
        choices=OPENVINO_PRECISIONS,
        default="f32",
        help="OpenVINO CPU INFERENCE_PRECISION_HINT of the parity check, stored as the "
        "default of `predict` (default f32: float32 numbers; bf16 is about 2x faster on "
        "CPUs with AVX512-BF16 or AMX, checked on top-1 agreement).",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=MAX_IMAGE_PIXELS,
        help="Largest height x width the SavedModel's serve_bytes decodes; larger "
        "images are refused before decoding (default %(default)s, 4096x4096).",
    )


def run(args):
    from keras_vit import extras
    from keras_vit.data.sources import load_images
    from keras_vit.export import export_model
    from keras_vit.export.exporter import plan_artifacts, required_extras
    from keras_vit.export.layout import check_output

    if "int8" in args.quantize and args.representative_data is None:
        raise ValueError(
            "--quantize int8 needs --representative-data (a folder of images, or "
            "'digits' for models trained on the built-in data)."
        )
    extras.check(*required_extras(plan_artifacts(args.format, args.quantize)))
    check_output(args.output, args.model_name)
    model = load_model(args.model, args.weights, args.num_classes)
    image_size = args.image_size or model.image_size
    calibration = None
    if args.representative_data is not None:
        calibration = load_images(
            args.representative_data, image_size, model.channels, args.calibration_images
        )
    result = export_model(  # beyond tolerance: ExportParityError, exit 1
        model,
        args.output,
        args.format,
        model_name=args.model_name,
        version=args.version,
        image_size=image_size,
        posemb_interpolation=args.posemb_interpolation,
        dynamic_resolution=args.dynamic_resolution,
        quantize=args.quantize,
        labels=None if args.labels is None else read_labels(args.labels),
        representative_images=calibration,
        top_k=args.top_k,
        opset=args.opset,
        openvino_precision=args.openvino_precision,
        max_image_pixels=args.max_image_pixels,
    )
    print(f"Exported version {result.version} to {result.path}:")
    for name, path in result.artifacts.items():
        print(f"  {name:<16}{path}")
    return 0
