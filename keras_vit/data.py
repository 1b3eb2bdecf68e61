"""Input data for keras-vit: the built-in default data set.

The built-in default is scikit-learn's digits (1,797 real 8x8 grayscale
scans of handwritten digits, shipped inside the package: no download).
"""

from __future__ import annotations

import numpy as np


def load_digits(test_fraction=0.2, seed=0):
    """The built-in digits, split into train and test.

    Args:
        test_fraction: float. Fraction held out for testing (stratified).
        seed: int. Seed of the split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` with images uint8
        ``(n, 8, 8, 1)`` in [0, 255] and int64 labels ``(n,)`` in 0..9.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype("int64"),
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )
    return (x_train, y_train), (x_test, y_test)
