"""Few-shot linear evaluation of frozen ViT features (paper, Section 4.1).

The closed-form probe of big_vision's few-shot evaluator: features are
whitened with the statistics of the few training examples, a large constant
feature is appended for the bias (so it is hardly regularised), and an
L2-regularised least-squares regression maps them to one-hot targets in
{-1, 1}; the predicted class is the argmax. For each seed, each class's
training examples are shuffled once and the first ``shots`` are used, so
the 5-shot set contains the 1-shot set.

- ``fit_linear_probe`` / ``LinearProbe``: the solver;
- ``fewshot_evaluate``: accuracy per shot count over several seeds (mean,
  standard deviation);
- ``extract_features``: frozen ``pre_logits`` features of a ``ViT``;
- ``load_fewshot_data``: train and test splits of a data source
  (``keras_vit.data.open_splits``);
"""

from __future__ import annotations

import numpy as np

from keras_vit.data.sources import open_splits
from keras_vit.data.streams import eval_stream

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_REG = 2.0**10
DEFAULT_NUM_SEEDS = 3
#: Value of the constant feature appended for the bias: large, so the
#: bias weight is almost unregularised.
BIAS_FEATURE = 100.0


class LinearProbe:
    """A fitted least-squares probe: ``predict(features (n, d)) -> labels (n,)``.

    Attributes:
        mean: ``(1, d)`` feature means of the training examples.
        std: ``(1, d)`` feature standard deviations (+ 1e-5).
        weights: ``(d + 1, classes)`` regression weights (last row: bias).
    """

    def __init__(self, mean, std, weights):
        self.mean = mean
        self.std = std
        self.weights = weights

    def scores(self, features):
        """Regression outputs ``(n, classes)`` for ``features (n, d)``."""
        return _design_matrix(features, self.mean, self.std) @ self.weights

    def predict(self, features):
        """Predicted class indices ``(n,)`` for ``features (n, d)``."""
        return self.scores(features).argmax(axis=1)


def _design_matrix(features, mean, std):
    """Whitened features plus the constant bias column: ``(n, d) -> (n, d + 1)``."""
    whitened = (np.asarray(features, dtype="float64") - mean) / std
    return np.concatenate([whitened, np.full((len(whitened), 1), BIAS_FEATURE)], axis=1)


def fit_linear_probe(features, labels, num_classes, l2_reg=DEFAULT_L2_REG):
    """Solves the L2-regularised least squares to {-1, 1} one-hot targets.

    With ``X`` the whitened features plus the bias column (n, d + 1) and
    ``Y`` the targets (n, classes): ``W = (X^T X + l2 I)^-1 X^T Y`` when
    ``n >= d + 1``, else the equal ``X^T (X X^T + l2 I)^-1 Y`` (solving the
    smaller system). Computed in float64.

    Args:
        features: array ``(n, d)``.
        labels: int array ``(n,)`` in ``[0, num_classes)``.
        num_classes: int.
        l2_reg: float. Regularisation strength (2^10 in the paper).

    Returns:
        ``LinearProbe``.
    """
    features = np.asarray(features, dtype="float64")
    labels = np.asarray(labels).astype("int64")
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            "Expected features (n, d) and labels (n,); got shapes "
            f"{features.shape} and {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must lie in [0, {num_classes}); got range [{labels.min()}, {labels.max()}]."
        )
    if not l2_reg > 0:
        raise ValueError(f"l2_reg must be positive; got {l2_reg}.")
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True) + 1e-5
    design = _design_matrix(features, mean, std)
    targets = 2.0 * np.eye(num_classes)[labels] - 1.0
    samples, width = design.shape
    if samples >= width:
        gram = design.T @ design + l2_reg * np.eye(width)
        weights = np.linalg.solve(gram, design.T @ targets)
    else:
        gram = design @ design.T + l2_reg * np.eye(samples)
        weights = design.T @ np.linalg.solve(gram, targets)
    return LinearProbe(mean, std, weights)


def sample_shots(labels, num_classes, shots, seed):
    """Indices of ``shots`` training examples per class.

    Each class's examples are permuted with ``numpy.random.default_rng(seed)``
    (classes in order) and the first ``shots`` kept.

    Raises:
        ValueError: if a class has fewer than ``shots`` examples.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for cls in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < shots:
            raise ValueError(
                f"{shots}-shot evaluation needs {shots} training examples of "
                f"every class; class {cls} has {len(members)}."
            )
        picked.append(members[:shots])
    return np.concatenate(picked)


def fewshot_evaluate(
    train_features,
    train_labels,
    test_features,
    test_labels,
    shots=DEFAULT_SHOTS,
    num_seeds=DEFAULT_NUM_SEEDS,
    l2_reg=DEFAULT_L2_REG,
    num_classes=None,
):
    """Few-shot linear accuracy for each shot count over seeds ``0..num_seeds-1``.

    Args:
        train_features: array ``(n_train, d)``: the pool the shots are drawn
            from.
        train_labels: int array ``(n_train,)``.
        test_features: array ``(n_test, d)``.
        test_labels: int array ``(n_test,)``.
        shots: iterable of int. Examples per class.
        num_seeds: int. Repetitions with different draws.
        l2_reg: float. Regularisation of the probe.
        num_classes: int or None (default: the largest label + 1).

    Returns:
        dict ``shots -> {"accuracies": [per seed], "mean": float, "std":
        float}`` (accuracy in [0, 1]; ``std`` over seeds, ddof 0).
    """
    train_labels = np.asarray(train_labels).astype("int64")
    test_labels = np.asarray(test_labels).astype("int64")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    shots = [int(s) for s in shots]
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive integers; got {shots}.")
    if int(num_seeds) < 1:
        raise ValueError(f"num_seeds must be >= 1; got {num_seeds}.")
    train_features = np.asarray(train_features, dtype="float64")
    results = {}
    for count in shots:
        accuracies = []
        for seed in range(int(num_seeds)):
            chosen = sample_shots(train_labels, num_classes, count, seed)
            probe = fit_linear_probe(
                train_features[chosen], train_labels[chosen], num_classes, l2_reg
            )
            accuracies.append(float(np.mean(probe.predict(test_features) == test_labels)))
        results[count] = {
            "accuracies": accuracies,
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
        }
    return results


def extract_features(model, dataset, verbose=1, description="batch"):
    """Frozen ``pre_logits`` features of a ``ViT`` over a batched data set.

    Args:
        model: a built ``keras_vit.ViT`` whose classifier is ``token`` or
            ``gap`` (the representation layer's output when it has one,
            else the pooled encoding).
        dataset: iterable of ``(images (batch, h, w, c) in [-1, 1], labels
            (batch,))`` (a batched ``tf.data.Dataset`` or NumPy pairs).
        verbose: int. 1 shows a Keras progress bar.
        description: str. Progress bar unit (one step per batch).

    Returns:
        ``(features float32 (n, d), labels int64 (n,))``.
    """
    import keras
    import tensorflow as tf

    if model.classifier == "unpooled":
        raise ValueError(
            "Few-shot evaluation needs pooled features; the model has classifier='unpooled'."
        )
    forward = tf.function(
        lambda images: model.head_outputs(images)["pre_logits"],
        reduce_retracing=True,
    )
    cardinality = getattr(dataset, "cardinality", None)
    target = int(cardinality()) if cardinality is not None else None
    progress = keras.utils.Progbar(
        target if target and target > 0 else None, verbose=verbose, unit_name=description
    )
    features, labels = [], []
    for step, (images, batch_labels) in enumerate(dataset, start=1):
        features.append(np.asarray(forward(tf.cast(images, tf.float32)), dtype="float32"))
        labels.append(np.asarray(batch_labels).astype("int64").reshape(-1))
        progress.update(step)
    if not features:
        raise ValueError("extract_features got an empty data set.")
    return np.concatenate(features), np.concatenate(labels)


def load_fewshot_data(
    spec,
    image_size,
    channels=3,
    batch_size=32,
    train_split="train",
    test_split="test",
    test_fraction=0.5,
    seed=0,
    data_dir=None,
):
    """Batched train and test data for few-shot evaluation, in [-1, 1].

    The two splits come from ``keras_vit.data.open_splits``: the spec's own
    splits (``digits``: the train/test split that training uses, so the
    test images are held out; ``tfds:NAME`` or a prepared tfds folder;
    an image folder with ``train/`` and ``test/`` (``val/``,
    ``validation/``) folders), else each class of an image folder (or
    TFRecords) split by ``test_fraction``.

    Args:
        spec: str. A data source (``keras_vit.data.open_source``).
        image_size: (int, int). Model input ``(height, width)``.
        channels: int. Model input channels (images are converted).
        batch_size: int.
        train_split, test_split: str. Split names.
        test_fraction: float. Held-out share of each class of a source
            without splits.
        seed: int. Seed of that split.
        data_dir: str or None. tfds data directory.

    Returns:
        ``(train, test, class_names)``: two ``tf.data.Dataset`` of
        ``(images float32 (batch, h, w, channels) in [-1, 1], labels int64
        (batch,))`` and the list of class names.

    Raises:
        FileNotFoundError: if the source does not exist.
        ValueError: if it has fewer than 2 classes or an empty split.
    """
    train, test = open_splits(
        spec, train_split, test_split, data_dir, channels, test_fraction, seed
    )
    if (
        not train.labelled
        or train.num_classes < 2
        or not train.num_examples
        or not test.num_examples
    ):
        raise ValueError(
            f"Few-shot data {spec!r} needs at least 2 classes with images in both "
            f"splits; found {train.num_classes or 0} classes with {train.num_examples} "
            f"training and {test.num_examples} test images."
        )
    names = train.class_names or [str(i) for i in range(train.num_classes)]
    return (
        eval_stream(train, image_size, batch_size, one_hot=False),
        eval_stream(test, image_size, batch_size, one_hot=False),
        list(names),
    )
