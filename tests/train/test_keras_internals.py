"""The private Keras code the tf.distribute workarounds patch: verified, and guarded."""

import keras
import pytest

from keras_vit.messages import KerasVitWarning
from keras_vit.train import strategies


def test_this_keras_is_a_verified_one_and_its_internals_match():
    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    assert version in strategies.VERIFIED_KERAS, (
        f"Keras {keras.__version__} is not in VERIFIED_KERAS: run tests/train/test_distribute.py "
        "on it, then add it (and widen setup.cfg's range)."
    )
    assert strategies.check_keras_internals() == []


def test_a_changed_internal_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(
        strategies._INTERNALS, "keras.optimizers.Optimizer._clip_gradients", ("self", "grads", "x")
    )
    monkeypatch.setitem(strategies._INTERNALS, "keras.optimizers.Optimizer._gone", ("self",))
    problems = strategies.check_keras_internals()
    assert any("_clip_gradients" in p and "changed" in p for p in problems)
    assert any("_gone no longer exists" in p for p in problems)
    with pytest.raises(RuntimeError, match="_clip_gradients.*changed"):
        strategies.require_keras_internals()


def test_an_unverified_version_with_matching_internals_warns(monkeypatch):
    monkeypatch.setattr(strategies, "VERIFIED_KERAS", ((2, 0),))
    with pytest.warns(KerasVitWarning, match="verified on Keras"):
        strategies.require_keras_internals()
