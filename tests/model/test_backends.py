"""keras_vit's layers are backend-agnostic: they also run on the PyTorch backend.

On backends other than TensorFlow, attention takes the fused
``keras.ops.dot_product_attention`` path; these tests run it (in a fresh
process, since the backend is fixed at import) against the explicit path and
against the timm reference logits of the ``vit_token`` fixture.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a fresh process on the PyTorch backend

SCRIPT = """
import json, sys
import numpy as np
import keras
from keras import ops
assert keras.backend.backend() == "torch", keras.backend.backend()
from keras_vit.model.blocks import MultiHeadSelfAttention
from keras_vit import model_from_checkpoint

layer = MultiHeadSelfAttention(4)
x = np.random.default_rng(0).normal(size=(2, 9, 16)).astype("float32")
fast = ops.convert_to_numpy(layer(x))
explicit, scores = layer(x, return_attention_scores=True)
case = sys.argv[1]
model = model_from_checkpoint(case + "/official.npz", semantics="timm")
reference = np.load(case + "/reference.npz")
logits = ops.convert_to_numpy(model(reference["inputs"]))
print(json.dumps({
    "fast_vs_explicit": float(np.abs(fast - ops.convert_to_numpy(explicit)).max()),
    "scores_shape": list(scores.shape),
    "logits_vs_timm": float(np.abs(logits - reference["logits"]).max()),
}))
"""


def test_torch_backend_fused_attention_and_fixture_parity(fixtures_dir):
    pytest.importorskip("torch")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(fixtures_dir / "vit_token")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fast_vs_explicit"] < 1e-5
    assert result["scores_shape"] == [2, 4, 9, 9]
    assert result["logits_vs_timm"] < 1e-5
