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
- ``load_fewshot_data``: train and test splits from ``"digits"``, a
  prepared tfds data set directory or a local image folder;
- ``save_fewshot_plot``: accuracy against shots as a PNG.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from keras_vit.data import IMAGE_EXTENSIONS, class_folders, decode_image

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_REG = 2.0**10
DEFAULT_NUM_SEEDS = 3
#: Value of the constant feature appended for the bias: large, so the
#: bias weight is almost unregularised.
BIAS_FEATURE = 100.0
TEST_SPLIT_NAMES = ("test", "val", "validation")


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
            f"Labels must lie in [0, {num_classes}); got range "
            f"[{labels.min()}, {labels.max()}]."
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
            "Few-shot evaluation needs pooled features; the model has "
            "classifier='unpooled'."
        )
    forward = tf.function(
        lambda images: model.forward_intermediates(images)["pre_logits"],
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


# ------------------------------------------------------------------ data


def find_images(folder):
    """Image files (``IMAGE_EXTENSIONS``) under ``folder``, recursively, sorted."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _folder_examples(directory, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = find_images(os.path.join(directory, name))
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype="int64")


def _split_per_class(paths, labels, test_fraction, seed):
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}.")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test[members[: max(1, int(round(len(members) * test_fraction)))]] = True
    paths = np.asarray(paths)
    return (list(paths[~test]), labels[~test]), (list(paths[test]), labels[test])


def _image_folder_splits(directory, test_fraction, seed):
    """``(train, test, class_names)`` of a class folder, each ``(paths, labels)``."""
    test_dir = next(
        (os.path.join(directory, n) for n in TEST_SPLIT_NAMES
         if os.path.isdir(os.path.join(directory, n))),
        None,
    )
    if os.path.isdir(os.path.join(directory, "train")) and test_dir:
        class_names = class_folders(os.path.join(directory, "train"))
        unknown = sorted(set(class_folders(test_dir)) - set(class_names))
        if unknown:
            raise ValueError(
                f"Test classes {unknown} of {test_dir} have no training folder "
                f"in {os.path.join(directory, 'train')}."
            )
        train = _folder_examples(os.path.join(directory, "train"), class_names)
        test = _folder_examples(test_dir, class_names)
    else:
        class_names = class_folders(directory)
        train, test = _split_per_class(
            *_folder_examples(directory, class_names), test_fraction, seed
        )
    if len(class_names) < 2 or not len(train[1]) or not len(test[1]):
        raise ValueError(
            f"{directory} needs at least 2 class subfolders with images "
            f"({', '.join(IMAGE_EXTENSIONS)}), or train/ and test/ folders of "
            f"them; found classes {class_names} with {len(train[1])} training "
            f"and {len(test[1])} test images."
        )
    return train, test, class_names


def _fit_image(image, size, channels):
    """uint8/float image ``(h, w, c)`` -> float32 ``(size, channels)`` in [0, 255]."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    if image.shape[-1] == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    return tf.image.resize(image, size, antialias=True)


def _decode_file(path, size, channels):
    import tensorflow as tf

    return _fit_image(decode_image(tf.io.read_file(path), channels), size, channels)


def _find_tfds_dir(directory):
    """The prepared tfds version folder (with ``dataset_info.json``) at or below ``directory``."""
    found = [
        os.path.dirname(p)
        for pattern in ("dataset_info.json", "*/dataset_info.json", "*/*/dataset_info.json")
        for p in glob.glob(os.path.join(glob.escape(directory), pattern))
    ]
    if len(found) > 1:
        raise ValueError(
            f"{directory} holds several prepared tfds data sets {sorted(found)}; "
            "pass the version folder of one."
        )
    return found[0] if found else None


def load_fewshot_data(
    spec, image_size, channels=3, batch_size=32, train_split="train",
    test_split="test", test_fraction=0.5, seed=0,
):
    """Batched train and test data for few-shot evaluation, in [-1, 1].

    Args:
        spec: str. ``"digits"`` (scikit-learn's digits, built in, with
            the train/test split of ``keras_vit.data.load_digits()`` that
            training uses, so the test images are held out); a
            prepared TensorFlow Datasets folder (the version folder holding
            ``dataset_info.json``, or a folder with exactly one below it;
            never downloads); or an image folder: ``train/`` and ``test/``
            (or ``val/``, ``validation/``) folders of class subfolders, or
            class subfolders split per class by ``test_fraction``.
        image_size: (int, int). Model input ``(height, width)``.
        channels: int. Model input channels (images are converted).
        batch_size: int.
        train_split, test_split: str. tfds split names.
        test_fraction: float. Held-out share of each class of a folder
            without a train/test layout (not used for digits).
        seed: int. Seed of that folder split.

    Returns:
        ``(train, test, class_names)``: two ``tf.data.Dataset`` of
        ``(images float32 (batch, h, w, channels) in [-1, 1], labels int64
        (batch,))`` and the list of class names.

    Raises:
        FileNotFoundError: if ``spec`` is neither ``"digits"`` nor a folder.
        ValueError: if a folder has no usable images or classes.
    """
    import tensorflow as tf

    size = tuple(int(s) for s in image_size)

    def finish(dataset):
        return (
            dataset.map(lambda image, label: (image / 127.5 - 1.0, label))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    if spec == "digits":
        from keras_vit.data import load_digits

        splits = load_digits()
        datasets = [
            tf.data.Dataset.from_tensor_slices(split).map(
                lambda image, label: (_fit_image(image, size, channels), label)
            )
            for split in splits
        ]
        return finish(datasets[0]), finish(datasets[1]), [str(i) for i in range(10)]
    if not os.path.isdir(spec):
        raise FileNotFoundError(
            f"Few-shot data {spec!r} is neither 'digits' nor an existing folder "
            "(image class folders or a prepared tfds data set)."
        )
    tfds_dir = _find_tfds_dir(spec)
    if tfds_dir is not None:
        import tensorflow_datasets as tfds

        builder = tfds.builder_from_directory(tfds_dir)
        label_feature = builder.info.features["label"]

        def tfds_split(split):
            dataset = builder.as_dataset(split=split, shuffle_files=False)
            return finish(dataset.map(
                lambda ex: (_fit_image(ex["image"], size, channels), ex["label"])
            ))

        return tfds_split(train_split), tfds_split(test_split), list(label_feature.names)
    train, test, class_names = _image_folder_splits(spec, test_fraction, seed)

    def folder_split(paths, labels):
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        return finish(dataset.map(
            lambda path, label: (_decode_file(path, size, channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        ))

    return folder_split(*train), folder_split(*test), class_names


def save_fewshot_plot(results, path, title=None, num_classes=None):
    """Accuracy against shots per class, mean with the spread over seeds.

    Args:
        results: dict from ``fewshot_evaluate``.
        path: output ``.png`` of ``FIGURE_SIZES_PX["fewshot"]`` pixels.
        title: optional title.
        num_classes: optional int; draws the chance level ``1 / classes``.

    Returns:
        The path written.
    """
    from keras_vit.analysis.inspection import new_figure, save_figure

    shots = sorted(results)
    means = np.array([results[s]["mean"] for s in shots]) * 100
    stds = np.array([results[s]["std"] for s in shots]) * 100
    figure = new_figure("fewshot")
    axes = figure.subplots()
    axes.errorbar(shots, means, yerr=stds, marker="o", capsize=4, label="mean +- std over seeds")
    if num_classes:
        axes.axhline(100.0 / num_classes, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.legend(fontsize=8, loc="center right")
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(s) for s in shots])
    axes.set_xlabel("training examples per class (shots)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.set_title(title or "few-shot linear evaluation", fontsize=10)
    figure.subplots_adjust(left=0.12, right=0.96, bottom=0.12, top=0.92)
    return save_figure(figure, path)
