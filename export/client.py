"""Example client of a ViT served by TF Serving (REST or gRPC).

Sends image files to the ``serve_bytes`` signature of a model exported with
``keras-vit export`` and prints the top-k classes:

    python export/client.py --model vit_b16 cat.jpg dog.png            # REST, port 8501
    python export/client.py --model vit_b16 --grpc-port 8500 cat.jpg   # gRPC

REST needs only the standard library; gRPC needs ``grpcio`` and
``tensorflow-serving-api`` (install it with ``--no-deps`` next to
``tensorflow-cpu``).
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.request


def rest_request(paths):
    """JSON body for ``serve_bytes``: TF Serving's ``{"b64": ...}`` form."""
    instances = []
    for path in paths:
        with open(path, "rb") as file:
            instances.append({"b64": base64.b64encode(file.read()).decode("ascii")})
    return {"signature_name": "serve_bytes", "instances": instances}


def predict_rest(host, port, model, paths, timeout=30.0):
    """Top-k of each image via ``POST /v1/models/<model>:predict``.

    Returns:
        list of dicts (one per image) with ``top_k_ids``,
        ``top_k_probabilities`` (and ``top_k_labels``, ``logits``,
        ``probabilities``).
    """
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/models/{model}:predict",
        data=json.dumps(rest_request(paths)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)["predictions"]


def predict_grpc(host, port, model, paths, timeout=30.0):
    """Top-k of each image via the gRPC ``PredictionService``; same rows as REST."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    images = []
    for path in paths:
        with open(path, "rb") as file:
            images.append(file.read())
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serve_bytes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    outputs = {key: tf.make_ndarray(value).tolist() for key, value in response.outputs.items()}
    return [dict(zip(outputs, row)) for row in zip(*outputs.values())]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="JPEG or PNG files.")
    parser.add_argument("--model", default="vit_b16", help="TF Serving model name.")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=None, help="Use gRPC on this port.")
    args = parser.parse_args()
    if args.grpc_port:
        rows = predict_grpc(args.host, args.grpc_port, args.model, args.images)
    else:
        rows = predict_rest(args.host, args.rest_port, args.model, args.images)
    for path, row in zip(args.images, rows):
        labels = row.get("top_k_labels") or [""] * len(row["top_k_ids"])
        print(path)
        for rank, (class_id, label, p) in enumerate(
            zip(row["top_k_ids"], labels, row["top_k_probabilities"]), 1
        ):
            label = label.decode() if isinstance(label, bytes) else label
            print(f"  {rank}. class {class_id} {label}: {p:.4f}")


if __name__ == "__main__":
    main()
