"""Export of the vit_token fixture: SavedModel signatures, TFLite, ONNX, OpenVINO, errors.

One export (SavedModel + TFLite float32/float16 + ONNX + OpenVINO) is shared
by the module; every artifact is run with its own runtime (TensorFlow,
LiteRT, onnxruntime, OpenVINO) against the Keras model.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import model_from_checkpoint
from keras_vit.export.exporter import export_model
from keras_vit.messages import KerasVitWarning

LABELS = [f"class_{i}" for i in range(10)]


def fixture_model(fixtures_dir):
    """The vit_token fixture (32x32, patch 8, 10 classes, timm numerics)."""
    checkpoint = fixtures_dir / "vit_token" / "official.npz"
    return model_from_checkpoint(checkpoint, semantics="timm", name="vit_token")


@pytest.fixture(scope="module")
def pixels(fixtures_dir):
    """The fixture's 4 reference images in [0, 255], float32 (4, 32, 32, 3)."""
    inputs = np.load(fixtures_dir / "vit_token" / "reference.npz")["inputs"]
    return ((inputs + 1.0) * 127.5).astype("float32")


@pytest.fixture(scope="module")
def exported(fixtures_dir, pixels, tmp_path_factory):
    model = fixture_model(fixtures_dir)
    result = export_model(
        model,
        tmp_path_factory.mktemp("exports"),
        ["saved_model", "tflite", "onnx", "openvino"],
        quantize=["float16"],
        labels=LABELS,
        top_k=3,
        verbose=False,
    )
    keras_logits = model(keras_vit.preprocess_input(pixels)).numpy()
    return result, keras_logits


@pytest.fixture(scope="module")
def signatures(exported):
    return tf.saved_model.load(exported[0].path).signatures


def test_layout_is_tf_serving_versioned(exported, tmp_path):
    result, _ = exported
    assert result.version == 1
    assert result.path.endswith("vit_token/1")
    info = json.loads(Path(result.path, "export_info.json").read_text())
    assert info["image_size"] == [32, 32] and info["labels"] == LABELS
    assert {row["artifact"] for row in info["parity"]} == {
        "saved_model",
        "tflite",
        "tflite_float16",
        "onnx",
        "openvino",
    }
    assert all(row.ok for row in result.parity)
    assert all(row.pre_logits_max_abs_diff is not None for row in result.parity)
    assert info["openvino_precision"] == "f32"
    assert {"model.xml", "model.bin"} <= {p.name for p in Path(result.path).iterdir()}


def test_saved_model_matches_keras(exported, signatures, pixels):
    _, keras_logits = exported
    out = signatures["serving_default"](images=tf.constant(pixels))
    assert np.max(np.abs(out["logits"].numpy() - keras_logits)) <= 1e-5
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
    top = np.argsort(-keras_logits, axis=-1)[:, :3]
    np.testing.assert_array_equal(out["top_k_ids"].numpy(), top)
    labels = out["top_k_labels"].numpy().astype(str)
    np.testing.assert_array_equal(labels, np.asarray(LABELS)[top])


def test_saved_model_cli_lists_all_signatures(exported):
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--all",
            "--dir",
            exported[0].path,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    for text in (
        "signature_def['serving_default']",
        "signature_def['serve_bytes']",
        "signature_def['serve_uint8']",
        "inputs['images']",
        "inputs['image_bytes']",
        "outputs['top_k_labels']",
    ):
        assert text in shown.stdout
    assert "DT_BFLOAT16" not in shown.stdout and "DT_HALF" not in shown.stdout


def test_serve_bytes_png_and_uint8_equal_serving_default(signatures, pixels):
    images = np.round(pixels).astype("uint8")
    encoded = [tf.io.encode_png(image).numpy() for image in images]
    from_bytes = signatures["serve_bytes"](image_bytes=tf.constant(encoded))
    from_uint8 = signatures["serve_uint8"](images=tf.constant(images))
    from_pixels = signatures["serving_default"](images=tf.constant(images.astype("float32")))
    np.testing.assert_allclose(from_bytes["logits"], from_pixels["logits"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(from_uint8["logits"], from_pixels["logits"])


def test_serve_bytes_resizes_jpeg(signatures):
    from skimage import data

    photo = tf.io.encode_jpeg(data.chelsea()).numpy()  # 300x451, resized inside
    out = signatures["serve_bytes"](image_bytes=tf.constant([photo, photo]))
    assert out["logits"].shape == (2, 10)
    # Same photo, same resize: equal up to float32 rounding (oneDNN's GEMMs and
    # reductions may block rows of a batch differently, so not bit for bit).
    np.testing.assert_allclose(out["logits"][0], out["logits"][1], atol=1e-5, rtol=0)


def test_warmup_requests_parse_and_run(exported, signatures):
    from tensorflow_serving.apis import prediction_log_pb2

    path = f"{exported[0].path}/assets.extra/tf_serving_warmup_requests"
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]
    assert [r.predict_log.request.model_spec.signature_name for r in records] == [
        "serving_default",
        "serve_uint8",
        "serve_bytes",
    ]
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.name == "vit_token"
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        out = signatures[request.model_spec.signature_name](**inputs)
        assert out["logits"].shape[-1] == 10


def test_saved_model_without_serving_protos_skips_warmup_with_a_notice(
    fixtures_dir, pixels, tmp_path, monkeypatch, capsys
):
    """`pip install keras-vit[cpu]` has no tensorflow-serving-api: still exports."""
    import importlib.util

    from keras_vit.export import saved_model as serving

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        serving.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow_serving" else real_find_spec(name, *a),
    )
    path = tmp_path / "sm"
    with pytest.warns(KerasVitWarning, match="pip install --no-deps tensorflow-serving-api"):
        serving.write_saved_model(fixture_model(fixtures_dir), str(path), warmup_images=pixels[:1])
    assert (path / "saved_model.pb").is_file()
    assert not (path / "assets.extra" / "tf_serving_warmup_requests").exists()


def _run_tflite(path, images):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return np.concatenate([runner(images=image[None])["logits"] for image in images])


@pytest.mark.parametrize("artifact, tolerance", [("tflite", 1e-4), ("tflite_float16", 1e-2)])
def test_tflite_matches_keras(exported, pixels, artifact, tolerance):
    result, keras_logits = exported
    logits = _run_tflite(result.artifacts[artifact], pixels)
    assert np.max(np.abs(logits - keras_logits)) <= tolerance


def test_onnx_runs_in_onnxruntime_and_matches_keras(exported, pixels):
    import onnx
    import onnxruntime

    result, keras_logits = exported
    proto = onnx.load(result.artifacts["onnx"])
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 18
    assert not any(node.op_type == "Erfc" for node in proto.graph.node)
    session = onnxruntime.InferenceSession(
        result.artifacts["onnx"], providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    logits = session.run(None, {session.get_inputs()[0].name: pixels})[names.index("logits")]
    assert np.max(np.abs(logits - keras_logits)) <= 1e-4


def test_openvino_ir_matches_keras_in_float32_with_dynamic_batch(exported, pixels):
    import openvino as ov

    result, keras_logits = exported
    ir = ov.Core().read_model(result.artifacts["openvino"])
    assert [str(i.get_partial_shape()) for i in ir.inputs] == ["[?,32,32,3]"]
    assert {o.get_any_name() for o in ir.outputs} == {"logits", "probabilities", "pre_logits"}
    # The weights are stored in float32 (ov.save_model would halve them by default).
    assert {
        c.get_element_type().get_type_name()
        for c in ir.get_ordered_ops()
        if c.get_type_name() == "Constant"
        and c.get_output_size()
        and c.get_output_partial_shape(0).rank.get_length() >= 2
    } == {"f32"}
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (pixels[:1], pixels):
        logits = compiled(batch)[compiled.output("logits")]
        assert np.max(np.abs(logits - keras_logits[: len(batch)])) <= 1e-4


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_runs_every_layernorm_as_one_mvn_kernel(fixtures_dir, exported, precision):
    # The CPU plugin's graph: LayerNorm spelled so that OpenVINO's MVNFusion takes it
    # (keras_vit.model.ops.layer_norm); otherwise each one runs as Reduce + RMS + Eltwise.
    import openvino as ov

    result, _ = exported
    compiled = ov.Core().compile_model(
        result.artifacts["openvino"], "CPU", {"INFERENCE_PRECISION_HINT": precision}
    )
    kernels = [
        op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()
    ]
    layer_norms = 2 * fixture_model(fixtures_dir).num_layers + 1
    assert kernels.count("MVN") == layer_norms
    assert "RMS" not in kernels and "Reduce" not in kernels


def _plugin_precisions(compiled):
    """The runtime precisions of a compiled IR's GEMM and LayerNorm kernels (the plugin's graph)."""
    return {
        rt["runtimePrecision"].astype(str)
        for rt in (op.get_rt_info() for op in compiled.get_runtime_model().get_ops())
        if rt["layerType"].astype(str) in ("MVN", "FullyConnected")
    }


@pytest.mark.parametrize("hint", ["f32", "bf16", "f16"])
def test_runs_as_is_the_precision_the_plugin_compiles(exported, hint):
    # The plugin's own compiled graph is the reference: a CPU without bf16 / f16 instructions
    # (an AVX2 AMD EPYC) computes every kernel of a bf16-hinted IR in f32.
    import openvino as ov

    from keras_vit.export.openvino import runs_as

    result, _ = exported
    compiled = ov.Core().compile_model(
        result.artifacts["openvino"], "CPU", {"INFERENCE_PRECISION_HINT": hint}
    )
    assert _plugin_precisions(compiled) == {runs_as(hint)}


def test_a_hint_this_cpu_cannot_run_is_reported(exported, recwarn):
    # load_artifact names the precision that runs, and warns when it is not the one asked for.
    from keras_vit.export.artifacts import load_artifact
    from keras_vit.export.openvino import runs_as

    result, keras_logits = exported
    artifact = load_artifact(result.artifacts["openvino"], precision="bf16")
    ours = [w for w in recwarn.list if issubclass(w.category, KerasVitWarning)]
    assert artifact.precision == runs_as("bf16")
    if artifact.precision == "f32":
        assert len(ours) == 1 and "computes in f32 on this CPU" in str(ours[0].message)
        assert "no BF16 instructions" in str(ours[0].message)
    else:
        assert not ours
    assert load_artifact(result.artifacts["openvino"], precision="f32").precision == "f32"


def test_openvino_bf16_runs_the_residual_stream_in_bf16(fixtures_dir, exported):
    from keras_vit.export.openvino import runs_as

    if runs_as("bf16") != "bf16":
        pytest.skip("this CPU has no bf16 instructions: OpenVINO computes a bf16 hint in f32")
    # The CPU plugin keeps in float32 the "graph tail" between an output and the nearest GEMM
    # above it. pre_logits (the final LayerNorm of the residual stream) would make every residual
    # addition such a tail, with reorders around each: the export ends pre_logits in a GEMM.
    import openvino as ov

    result, _ = exported
    compiled = ov.Core().compile_model(
        result.artifacts["openvino"], "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}
    )
    kernels = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
    precisions = [
        rt["runtimePrecision"].astype(str)
        for rt in kernels
        if rt["layerType"].astype(str) in ("MVN", "FullyConnected")
    ]
    assert precisions and set(precisions) == {"bf16"}
    residual_additions = 2 * fixture_model(fixtures_dir).num_layers
    eltwise_f32 = [
        rt["originalLayersNames"].astype(str)
        for rt in kernels
        if rt["layerType"].astype(str) == "Eltwise" and rt["runtimePrecision"].astype(str) == "f32"
    ]
    assert len(eltwise_f32) < residual_additions, eltwise_f32


def test_bad_inputs_give_clear_errors(signatures):
    expected = r"Expected images of shape \(batch, 32, 32, 3\); got shape"
    for shape in [(32, 32, 3), (1, 48, 48, 3), (1, 32, 32, 1)]:  # rank, size, channels
        with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
            signatures["serving_default"](images=tf.zeros(shape))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="expects encoded JPEG, PNG, GIF or BMP"
    ):
        signatures["serve_bytes"](image_bytes=tf.constant([b"definitely not an image"]))


def test_mixed_precision_model_exports_float32(fixtures_dir, pixels, tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = fixture_model(fixtures_dir)
    keras.config.set_dtype_policy("float32")
    assert model.compute_dtype == "bfloat16"
    result = export_model(model, tmp_path, ["saved_model"], verbose=False)
    signature = tf.saved_model.load(result.path).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.float32
    assert signature.structured_outputs["logits"].dtype == tf.float32
    reference = fixture_model(fixtures_dir)(keras_vit.preprocess_input(pixels)).numpy()
    logits = signature(images=tf.constant(pixels))["logits"]
    assert logits.dtype == tf.float32
    assert np.max(np.abs(logits.numpy() - reference)) <= 1e-5


def test_export_rejects_bad_arguments(fixtures_dir, exported, tmp_path):
    model = fixture_model(fixtures_dir)
    with pytest.raises(ValueError, match="Unknown format"):
        export_model(model, tmp_path, ["torchscript"], verbose=False)
    with pytest.raises(ValueError, match="needs the 'tflite' format"):
        export_model(model, tmp_path, ["onnx"], quantize=["float16"], verbose=False)
    with pytest.raises(ValueError, match="needs the 'tflite' or 'openvino' format"):
        export_model(model, tmp_path, ["onnx"], quantize=["int8"], verbose=False)
    with pytest.raises(ValueError, match="needs representative_images"):
        export_model(model, tmp_path, ["tflite"], quantize=["int8"], verbose=False)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        export_model(model, tmp_path, ["saved_model"], image_size=36, verbose=False)
    with pytest.raises(ValueError, match="labels"):
        export_model(model, tmp_path, ["saved_model"], labels=["a", "b"], verbose=False)
    base = exported[0].path.rsplit("/", 2)[0]
    with pytest.raises(ValueError, match="never overwrite"):
        export_model(model, base, ["saved_model"], version=1, verbose=False)


def _client():
    """``export/client.py``, the TF Serving client example (not a package module)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "export" / "client.py"
    spec = importlib.util.spec_from_file_location("export_client", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve_bytes_rows(signatures, image_bytes):
    """What TF Serving answers: one dict per image, bytes as str."""
    out = signatures["serve_bytes"](image_bytes=tf.constant(image_bytes))
    out = {
        key: value.numpy().astype(str).tolist()
        if value.dtype == tf.string
        else value.numpy().tolist()
        for key, value in out.items()
    }
    return [dict(zip(out, row)) for row in zip(*out.values())]


@pytest.fixture(scope="module")
def photo_files(pixels, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, image in enumerate(np.round(pixels).astype("uint8")[:2]):
        paths.append(str(folder / f"image_{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(image))
    return paths


def test_rest_client_speaks_tf_serving_json(signatures, photo_files):
    import base64
    import http.server
    import threading

    class FakeServing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/v1/models/vit_token:predict"
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert body["signature_name"] == "serve_bytes"
            images = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
            answer = json.dumps({"predictions": _serve_bytes_rows(signatures, images)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), FakeServing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rows = _client().predict_rest("127.0.0.1", server.server_port, "vit_token", photo_files)
    finally:
        server.shutdown()
    expected = _serve_bytes_rows(signatures, [Path(p).read_bytes() for p in photo_files])
    assert [row["top_k_labels"] for row in rows] == [row["top_k_labels"] for row in expected]


def test_grpc_client_round_trip(signatures, photo_files):
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class FakeServing(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            signature = signatures[request.model_spec.signature_name]
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for key, value in signature(**inputs).items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(FakeServing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        rows = _client().predict_grpc("127.0.0.1", port, "vit_token", photo_files)
    finally:
        server.stop(None)
    expected = _serve_bytes_rows(signatures, [Path(p).read_bytes() for p in photo_files])
    assert [row["top_k_ids"] for row in rows] == [row["top_k_ids"] for row in expected]
    np.testing.assert_allclose(
        [row["logits"] for row in rows], [row["logits"] for row in expected], atol=1e-6
    )


def test_onnx_that_onnxruntime_refuses_fails_loudly(monkeypatch, tmp_path):
    import keras_vit.model.ops
    from keras_vit.export.onnx import convert_onnx

    # TF's exact GELU lowers to Erfc: tf2onnx 1.17 exits cleanly with an invalid graph.
    monkeypatch.setattr(keras_vit.model.ops, "gelu", lambda x, approximate=False: tf.nn.gelu(x))
    model = keras_vit.ViT(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=32,
        num_classes=3,
    )
    with pytest.raises(RuntimeError, match="onnxruntime refuses"):
        convert_onnx(model, str(tmp_path / "model.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_large_model_tflite_layout_with_buffer_offsets_matches_keras(
    fixtures_dir, pixels, tmp_path, monkeypatch
):
    from tensorflow.lite.python import schema_py_generated as schema

    from keras_vit.export import tflite

    model = fixture_model(fixtures_dir)
    offsets = {}
    for threshold in (2**40, 0):  # never (classic layout), always (as for models > 256 MiB)
        monkeypatch.setattr(tflite, "BUFFER_OFFSET_BYTES", threshold)
        path = tflite.convert_tflite(model, str(tmp_path / f"model_{threshold}.tflite"))
        flatbuffer = schema.Model.GetRootAs(Path(path).read_bytes())
        buffers = [flatbuffer.Buffers(i) for i in range(flatbuffer.BuffersLength())]
        offsets[threshold] = sum(buffer.Offset() > 0 for buffer in buffers)
        logits = _run_tflite(path, pixels)
        keras_logits = model(keras_vit.preprocess_input(pixels)).numpy()
        assert np.max(np.abs(logits - keras_logits)) <= 1e-4
    assert offsets[2**40] == 0 and offsets[0] > 10  # every weight buffer after the model
