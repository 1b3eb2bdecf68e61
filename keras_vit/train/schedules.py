"""Learning-rate schedule of the ViT paper: linear warm-up, then cosine or linear decay."""

from __future__ import annotations

import math

import keras
from keras import ops

DECAYS = ("cosine", "linear", "constant")


@keras.saving.register_keras_serializable(package="keras_vit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then decay to ``end``.

    Args:
        peak: float. Learning rate at the end of the warm-up.
        total_steps: int. Steps of the whole run (warm-up included).
        warmup_steps: int. Steps of linear warm-up.
        decay: str. ``"cosine"``, ``"linear"`` or ``"constant"``.
        end: float. Learning rate at ``total_steps``.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", end=0.0):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}.")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"Expected 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak * step / max(self.warmup_steps, 1)
        progress = ops.clip(
            (step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0
        )
        if self.decay == "cosine":
            fraction = 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "linear":
            fraction = 1.0 - progress
        else:
            fraction = ops.ones_like(progress)
        decayed = self.end + (self.peak - self.end) * fraction
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "end": self.end,
        }
