"""Data parallelism: MirroredStrategy == one device, multi-worker fit, resume after SIGKILL.

Each test runs TensorFlow in fresh processes: logical CPU devices and
multi-worker clusters must be configured before TensorFlow initialises.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_vit  # noqa: F401  (registers the model class for loading)

from test_loop import TINY_MODEL

pytestmark = pytest.mark.slow

TIMEOUT = 240  # seconds per process; a hung collective fails the test instead of CI
TINY_DIGITS = [*TINY_MODEL, "verbose=2"]

MIRRORED_VS_ONE_DEVICE = """
import json
import numpy as np
from keras_vit.train.strategies import make_strategy

mirrored = make_strategy("mirrored", cpu_devices=2)  # before TensorFlow initialises
import keras, tensorflow as tf
from keras_vit.data import load_digits
from keras_vit.train.recipe import load_recipe
from keras_vit.train.loop import build_model, build_optimizer, compile_model

recipe = load_recipe("digits_scratch", ["model.hidden_size=16", "model.num_layers=1",
    "model.num_heads=2", "model.mlp_dim=32", "model.dropout_rate=0.0", "optimizer=sgd",
    "learning_rate=0.5", "warmup_steps=0", "jit_compile=false"])
(x, y), _ = load_digits()
data = tf.data.Dataset.from_tensor_slices(
    ((x[:96] / 127.5 - 1).astype("float32"), np.eye(10, dtype="float32")[y[:96]])).batch(32)

def fit(strategy, initial=None, make_optimizer=lambda: build_optimizer(recipe, 3)):
    with strategy.scope():
        model = build_model(recipe, 10)
        compile_model(model, make_optimizer(), recipe)
    if initial is not None:
        model.set_weights(initial)
    start = model.get_weights()
    model.fit(data, epochs=1, shuffle=False, verbose=0)
    return start, model.get_weights()

def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

start, one = fit(tf.distribute.OneDeviceStrategy("/cpu:0"))
_, two = fit(mirrored, start)
# Keras' own optimiser clips each replica's partial gradient before the all-reduce.
keras_sgd = lambda: keras.optimizers.SGD(0.5, global_clipnorm=1.0)
_, one_keras = fit(tf.distribute.OneDeviceStrategy("/cpu:0"), start, keras_sgd)
_, two_keras = fit(mirrored, start, keras_sgd)
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "moved": max_diff(start, one),
    "max_diff": max_diff(one, two),
    "keras_clip_diff": max_diff(one_keras, two_keras),
}))
"""


def _env(**extra):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


def _train_command(output, *overrides):
    return [
        sys.executable,
        "-m",
        "keras_vit_cli",
        "train",
        "digits_scratch",
        "--output",
        str(output),
        "--set",
        *TINY_DIGITS,
        *overrides,
    ]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_over_two_cpu_devices_equals_one_device():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_VS_ONE_DEVICE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["moved"] > 1e-2  # three SGD steps changed the weights...
    assert report["max_diff"] <= 1e-5  # ...identically with the batch split over 2 devices
    # The global-norm clip (1.0 in every recipe) was active: clipping each replica's
    # partial gradient, as Keras' optimisers do, gives other weights.
    assert report["keras_clip_diff"] > 1e-3


def test_multiworker_fit_with_two_worker_processes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(
            subprocess.Popen(
                _train_command(tmp_path / "run", "epochs=2"),  # strategy=auto reads TF_CONFIG
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(TF_CONFIG=tf_config),
            )
        )
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT)[0])
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]

    chief_dir, other_dir = tmp_path / "run", tmp_path / "run" / "workers" / "worker-1"
    chief = json.loads((chief_dir / "metrics.json").read_text())
    other = json.loads((other_dir / "metrics.json").read_text())
    assert chief["num_replicas"] == 2
    assert chief["steps"] == other["steps"] == 2 * (1437 // 64)
    assert chief["test_accuracy"] == other["test_accuracy"]
    # Synchronous data parallelism: both workers end with the same weights.
    for a, b in zip(
        keras.saving.load_model(chief_dir / "model.keras").get_weights(),
        keras.saving.load_model(other_dir / "model.keras").get_weights(),
    ):
        np.testing.assert_array_equal(a, b)


def test_sigkilled_run_resumes_and_finishes_with_the_same_steps(tmp_path):
    epochs, steps_per_epoch = 30, 1437 // 64
    command = _train_command(tmp_path / "run", f"epochs={epochs}")
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    backup = tmp_path / "run" / "backup"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not any(backup.glob("*.json")) and first.poll() is None:
            assert time.monotonic() < deadline, "no backup written in time"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "run" / "metrics.json").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == epochs * steps_per_epoch
    assert 0 < len(metrics["history"]["loss"]) < epochs  # it resumed, it did not start over
