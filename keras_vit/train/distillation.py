"""DeiT's hard-label distillation: a student with a distillation token learns from a teacher.

Touvron et al. (2021), "Training data-efficient image transformers": the class
head learns the labels, the distillation head learns the teacher's predicted
class, each half of the loss; at inference the student's logits are the mean
of both heads (what ``ViT.call`` returns).

    student = keras_vit.ViT_Ti16(distillation_token=True, num_classes=1000)
    model = HardDistillation(student, teacher)   # teacher: any Keras classifier
    model.compile(optimizer="adamw", label_smoothing=0.1)
    model.fit(images, one_hot_labels)
    student.save("deit_ti.keras")
"""

from __future__ import annotations

import keras
from keras import ops


class HardDistillation(keras.Model):
    """Trains ``student`` (``distillation_token=True``) against labels and a frozen ``teacher``.

    ``loss = (CE(labels, logits_cls) + CE(argmax(teacher), logits_dist)) / 2``,
    the teacher's class taken from its logits on the same (augmented) images.
    ``call`` returns the student's mean logits ``(B, classes)``; the
    ``accuracy`` metric is measured on them.

    Args:
        student: a ``keras_vit.ViT`` with a distillation token and a head.
        teacher: a Keras model from images to ``(B, classes)`` scores; not
            trained.
        label_smoothing: float in [0, 1). Smoothing of the true labels (the
            teacher's labels are hard, as in DeiT).
    """

    def __init__(self, student, teacher, label_smoothing=0.0, **kwargs):
        super().__init__(**kwargs)
        if not getattr(student, "distillation_token", False) or student.head is None:
            raise ValueError(
                "HardDistillation needs a student built with distillation_token=True and a "
                "head (include_top=True)."
            )
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.label_smoothing = float(label_smoothing)
        self.cross_entropy = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=self.label_smoothing
        )
        self.hard_cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True)
        self.accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")

    def call(self, images, training=False):
        return self.student(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        out = self.student.head_outputs(x, training=training)
        teacher_class = ops.argmax(self.teacher(x, training=False), axis=-1)
        classes = ops.shape(out["logits_dist"])[-1]
        teacher_labels = ops.one_hot(teacher_class, classes, dtype="float32")
        self.accuracy.update_state(y, out["logits"])
        return 0.5 * (
            self.cross_entropy(y, out["logits_cls"])
            + self.hard_cross_entropy(teacher_labels, out["logits_dist"])
        )

    @property
    def metrics(self):
        return [*super().metrics, self.accuracy]
