"""DeiT hard-label distillation: both heads learn, the teacher does not."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.train.distillation import HardDistillation

TINY = dict(image_size=16, patch_size=8, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, 16, 16, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return images, labels


def test_both_heads_train_and_the_teacher_stays_frozen():
    student = keras_vit.ViT(**TINY, num_classes=3, distillation_token=True)
    teacher = keras_vit.ViT(**TINY, num_classes=3)
    rng = np.random.default_rng(1)
    teacher.set_weights(
        [rng.normal(0, 0.5, w.shape).astype("float32") for w in teacher.get_weights()]
    )
    teacher_before = [w.copy() for w in teacher.get_weights()]
    model = HardDistillation(student, teacher)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, labels = data()
    history = model.fit(images, labels, epochs=5, batch_size=16, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and "accuracy" in history
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert np.any(student.head.kernel.numpy()) and np.any(student.head_dist.kernel.numpy())
    # the distillation head learns the teacher's classes, not the labels
    teacher_classes = np.argmax(teacher(images), -1)
    dist = np.argmax(student.forward_intermediates(images)["logits_dist"], -1)
    assert np.mean(dist == teacher_classes) > np.mean(dist == np.argmax(labels, -1))


def test_a_student_without_a_distillation_token_is_refused():
    with pytest.raises(ValueError, match="distillation_token=True"):
        HardDistillation(keras_vit.ViT(**TINY, num_classes=3), keras_vit.ViT(**TINY, num_classes=3))
    student = keras_vit.ViT(**TINY, num_classes=3, distillation_token=True)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        HardDistillation(student, student, label_smoothing=1.0)
