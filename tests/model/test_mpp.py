"""Masked patch prediction: corruption, targets, loss, gradients, saving, precision, fine-tuning."""

import inspect
import itertools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import MaskedPatchPrediction, ViT, patch_color_targets
from keras_vit.messages import KerasVitWarning
from keras_vit.model.mpp import check_mpp_settings
from keras_vit.weights.writers import save_official_npz

TINY = dict(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)


def tiny_backbone(image_size=16, patch_size=4, channels=3, **overrides):
    config = dict(TINY, image_size=image_size, patch_size=patch_size, channels=channels)
    config.update(include_top=False, **overrides)
    return ViT(**config)


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


# --- the corruption ---------------------------------------------------------------


def draw_corruptions(model, batches, batch_size, num_patches, width=8):
    """Feeds distinct patch embeddings through ``corrupt``; reads back what happened.

    Patch ``n`` of every image is the vector ``n + 1`` (all entries), so an
    output equal to the mask token, to its own input or to another patch's
    input tells what was done to it, independently of the returned draws.
    """
    patches = np.broadcast_to(
        np.arange(1, num_patches + 1, dtype="float32")[None, :, None],
        (batch_size, num_patches, width),
    )
    mask_token = model.mask_token.numpy()
    records = []
    for _ in range(batches):
        out, draws = model.corrupt(tf.constant(patches))
        out = out.numpy()
        is_mask = np.all(out == mask_token, axis=-1)
        value = out[..., 0]
        is_patch = np.all(out == value[..., None], axis=-1) & ~is_mask
        records.append(
            dict(
                {name: draws[name].numpy() for name in draws},
                is_mask=is_mask,
                is_self=is_patch & (value == patches[..., 0]),
                is_other=is_patch & (value != patches[..., 0]),
                value=value,
            )
        )
    return {key: np.concatenate([r[key] for r in records]) for key in records[0]}


@pytest.fixture(scope="module")
def corruption_draws():
    # 8 x 8 = 64 patches, width-8 embeddings; 40 x 48 = 1920 images.
    backbone = tiny_backbone(image_size=32, hidden_size=8, num_heads=2)
    model = MaskedPatchPrediction(backbone, seed=3)
    return draw_corruptions(model, batches=40, batch_size=48, num_patches=64)


def test_half_of_every_image_is_corrupted_uniformly_over_positions(corruption_draws):
    corrupted = corruption_draws["corrupted"]
    assert np.all(corrupted.sum(axis=1) == 32)  # round(0.5 * 64) in every image
    # Every position is chosen with probability 1/2: binomial error over 1920 images.
    per_position = corrupted.mean(axis=0)
    sigma = np.sqrt(0.25 / len(corrupted))
    assert np.all(np.abs(per_position - 0.5) < 5 * sigma), per_position
    # Not always the same half: positions are chosen independently of each other.
    assert len({row.tobytes() for row in corrupted}) == len(corrupted)


def test_80_10_10_of_the_corrupted_patches_as_seen_in_the_output(corruption_draws):
    d = corruption_draws
    corrupted = d["corrupted"]
    # Only corrupted patches change.
    assert np.all(d["is_self"][~corrupted])
    n = corrupted.sum()
    shares = {
        "mask": d["is_mask"][corrupted].sum() / n,
        "random": d["is_other"][corrupted].sum() / n,
        "unchanged": d["is_self"][corrupted].sum() / n,
    }
    for name, expected in (("mask", 0.8), ("random", 0.1), ("unchanged", 0.1)):
        sigma = np.sqrt(expected * (1 - expected) / n)
        assert abs(shares[name] - expected) < 5 * sigma, (name, shares)
    # The returned draws say the same as the outputs.
    np.testing.assert_array_equal(d["masked"], d["is_mask"])
    np.testing.assert_array_equal(d["randomised"], d["is_other"])


def test_random_replacement_is_never_the_patch_itself(corruption_draws):
    d = corruption_draws
    randomised = d["randomised"]
    positions = np.broadcast_to(np.arange(64), randomised.shape)
    # What the output holds is the source patch's embedding, never its own.
    np.testing.assert_array_equal(d["value"][randomised], d["source"][randomised] + 1)
    assert not np.any(d["source"][randomised] == positions[randomised])
    assert not np.any(d["is_self"][randomised])
    # ...and every other patch can be the source: offsets 1..63 all occur, evenly.
    offsets = (d["source"] - positions) % 64
    counts = np.bincount(offsets.ravel(), minlength=64)
    assert counts[0] == 0 and np.all(counts[1:] > 0)
    expected = offsets.size / 63
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))


def test_other_rates_and_counts():
    backbone = tiny_backbone(image_size=20, hidden_size=8)  # 5 x 5 = 25 patches
    model = MaskedPatchPrediction(backbone, corruption_rate=0.15, mask_rate=1.0, random_rate=0.0)
    d = draw_corruptions(model, batches=2, batch_size=16, num_patches=25)
    assert np.all(d["corrupted"].sum(axis=1) == 4)  # floor(0.15 * 25 + 0.5)
    np.testing.assert_array_equal(d["is_mask"], d["corrupted"])  # mask_rate 1: all masked
    odd = MaskedPatchPrediction(backbone, corruption_rate=0.5)
    assert np.all(draw_corruptions(odd, 1, 8, 25)["corrupted"].sum(axis=1) == 13)  # 12.5 up


# --- the targets ------------------------------------------------------------------


def numpy_targets(x, p, q, bits, cells=1):
    """The documented rule, written out with loops (float64)."""
    batch, height, width, channels = x.shape
    levels = 2**bits
    out = []
    for image in x.astype("float64"):
        per_image = []
        for r, c in itertools.product(range(height // p), range(width // q)):
            patch = image[r * p : (r + 1) * p, c * q : (c + 1) * q]
            per_cell = []
            for i, j in itertools.product(range(cells), range(cells)):
                cell = patch[
                    i * p // cells : (i + 1) * p // cells, j * q // cells : (j + 1) * q // cells
                ]
                mean = cell.reshape(-1, channels).mean(axis=0)
                level = [min(int(np.floor((v + 1) / 2 * levels)), levels - 1) for v in mean]
                per_cell.append(
                    sum(lv * levels ** (channels - 1 - k) for k, lv in enumerate(level))
                )
            per_image.append(per_cell)
        out.append(per_image)
    return np.array(out)


@pytest.mark.parametrize(
    "channels, bits, patch", [(3, 3, (4, 4)), (1, 3, (4, 4)), (3, 2, (4, 2)), (1, 1, (2, 2))]
)
def test_mean_color_classes_equal_the_numpy_rule(channels, bits, patch):
    x = images((3, 8, 8, channels), seed=channels + bits)
    got = patch_color_targets(x, patch, bits=bits).numpy()
    expected = numpy_targets(x, *patch, bits)[..., 0]
    assert got.dtype == np.int32 and got.shape == (3, (8 // patch[0]) * (8 // patch[1]))
    np.testing.assert_array_equal(got, expected)
    assert got.max() < 2 ** (bits * channels)


@pytest.mark.parametrize("channels", [3, 1])
def test_4x4_downsampled_classes_equal_the_numpy_rule(channels):
    x = images((2, 16, 16, channels), seed=5)
    got = patch_color_targets(x, 8, bits=3, downsample=4).numpy()
    assert got.shape == (2, 4, 16)  # 4 patches of 8 x 8, 16 cells of 2 x 2 each
    np.testing.assert_array_equal(got, numpy_targets(x, 8, 8, 3, cells=4))


def test_quantisation_edges_and_channel_order():
    def mean_color(rgb):  # one 2 x 2 patch of one colour
        return int(patch_color_targets(np.full((1, 2, 2, 3), rgb, "float32"), 2)[0, 0])

    # Level boundaries belong to the upper level; 1.0 is the last level, not 8.
    assert mean_color((-1.0, -1.0, -1.0)) == 0
    assert mean_color((1.0, 1.0, 1.0)) == 511
    assert mean_color((-0.75, -1.0, -1.0)) == 64  # u = 1/8 exactly: level 1 of R
    assert mean_color((-0.7500001, -1.0, -1.0)) == 0
    assert mean_color((-1.0, -1.0, -0.75)) == 1  # B is the least significant
    assert mean_color((-1.0, -0.75, -1.0)) == 8
    assert mean_color((5.0, -5.0, -1.0)) == 7 * 64  # clipped outside [-1, 1]


def test_unquantised_means_are_the_regression_targets():
    x = images((2, 8, 8, 3))
    means = patch_color_targets(x, 4, bits=None).numpy()
    np.testing.assert_allclose(
        means[1, 3], x[1, 4:8, 4:8].reshape(-1, 3).mean(axis=0), rtol=1e-6, atol=1e-6
    )
    pixels = patch_color_targets(x, 4, bits=None, downsample=4).numpy()
    assert pixels.shape == (2, 4, 16, 3)
    np.testing.assert_array_equal(pixels[0, 1], x[0, 0:4, 4:8].reshape(16, 3))


def test_target_arguments_are_checked():
    x = images((1, 8, 8, 3))
    with pytest.raises(ValueError, match="not a multiple of the patch size 3"):
        patch_color_targets(x, 3)
    with pytest.raises(ValueError, match="downsample .* must divide the patch size"):
        patch_color_targets(x, 4, downsample=3)
    with pytest.raises(ValueError, match="bits must be <= 8"):
        patch_color_targets(x, 4, bits=9)


# --- the model --------------------------------------------------------------------


def _xent(logits, targets):
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def test_loss_covers_the_corrupted_patches_only():
    model = MaskedPatchPrediction(tiny_backbone(), seed=0)
    x = images((4, 16, 16, 3))
    y_pred = {k: v.numpy() for k, v in model(x).items()}
    corrupted = y_pred["corrupted"].astype(bool)
    targets = patch_color_targets(x, 4).numpy()
    expected = _xent(y_pred["predictions"].astype("float64"), targets)[corrupted].mean()
    loss = float(model.compute_loss(x, None, y_pred))
    assert loss == pytest.approx(expected, rel=1e-5)
    # Any change to the predictions of unchanged patches leaves the loss as it was...
    scrambled = dict(y_pred, predictions=y_pred["predictions"].copy())
    scrambled["predictions"][~corrupted] = np.random.default_rng(1).normal(
        0, 10, scrambled["predictions"][~corrupted].shape
    )
    assert float(model.compute_loss(x, None, scrambled)) == pytest.approx(loss, rel=1e-6)
    # ...and a change at a corrupted one does not.
    moved = dict(y_pred, predictions=y_pred["predictions"].copy())
    moved["predictions"][corrupted] += np.eye(512, dtype="float32")[targets[corrupted]] * 5
    assert float(model.compute_loss(x, None, moved)) < loss - 1.0


def test_downsampled_and_pixel_targets_train():
    x = images((4, 16, 16, 3))
    down = MaskedPatchPrediction(tiny_backbone(), target="downsampled_color", seed=0)
    out = down(x)
    assert tuple(out["predictions"].shape) == (4, 16, 16, 512)
    pixels = MaskedPatchPrediction(tiny_backbone(), target="pixels", seed=0)
    y_pred = {k: v.numpy() for k, v in pixels(x).items()}
    assert y_pred["predictions"].shape == (4, 16, 48)
    corrupted = y_pred["corrupted"].astype(bool)
    target = x.reshape(4, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, 16, 48)
    expected = ((y_pred["predictions"] - target) ** 2).mean(axis=-1)[corrupted].mean()
    assert float(pixels.compute_loss(x, None, y_pred)) == pytest.approx(expected, rel=1e-5)
    for model in (down, pixels):
        model.compile(optimizer="adam")
        history = model.fit(x, epochs=1, batch_size=2, verbose=0).history
        assert np.isfinite(history["loss"][0])
    assert "accuracy" in down.evaluate(x, verbose=0, return_dict=True)
    assert set(pixels.evaluate(x, verbose=0, return_dict=True)) == {"loss"}


def test_the_mask_token_receives_gradients_and_trains():
    model = MaskedPatchPrediction(tiny_backbone(), seed=0)
    x = images((4, 16, 16, 3))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, None, model(x, training=True))
    gradient = tape.gradient(loss, model.mask_token)
    assert gradient is not None and np.all(np.isfinite(gradient))
    assert float(tf.norm(gradient)) > 0
    before = model.mask_token.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, epochs=2, batch_size=4, verbose=0).history
    assert not np.allclose(model.mask_token.numpy(), before)
    assert set(history) == {"loss", "accuracy"} and history["loss"][1] < history["loss"][0]


def test_labels_of_a_dataset_are_ignored():
    x = images((8, 16, 16, 3))
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(8))).batch(4)
    model = MaskedPatchPrediction(tiny_backbone(), seed=0)
    model.compile(optimizer="adam")
    assert np.isfinite(model.fit(dataset, epochs=1, shuffle=False, verbose=0).history["loss"][0])


def test_keras_round_trip_in_safe_mode(tmp_path):
    model = MaskedPatchPrediction(tiny_backbone(), target="downsampled_color", bits=2, seed=7)
    model.compile(optimizer="adam")
    model.fit(images((4, 16, 16, 3)), epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "mpp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, MaskedPatchPrediction) and isinstance(loaded.backbone, ViT)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same corruption draws from the same state, so the same predictions.
    patches = tf.constant(images((2, 16, 16), seed=2))
    np.testing.assert_array_equal(model.corrupt(patches)[0], loaded.corrupt(patches)[0])


def test_mixed_bfloat16_trains_with_float32_state():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = MaskedPatchPrediction(tiny_backbone(), seed=0)
    x = images((4, 16, 16, 3))
    out = model(x)
    assert out["predictions"].dtype == "float32"
    assert model.mask_token.dtype == "float32" and model.backbone.compute_dtype == "bfloat16"
    model.compile(optimizer="adam")
    history = model.fit(x, epochs=2, batch_size=4, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_a_hybrid_predicts_one_target_per_token():
    backbone = tiny_backbone(image_size=32, patch_size=1, resnet_layers=(), resnet_width=32)
    assert backbone.stride == (4, 4) and backbone.grid_size == (8, 8)
    model = MaskedPatchPrediction(backbone, target="downsampled_color", downsample=2)
    x = images((2, 32, 32, 3))
    assert tuple(model(x)["predictions"].shape) == (2, 64, 4, 512)
    # The target of token (r, c) is its 4 x 4 pixel region.
    np.testing.assert_array_equal(model.targets(x), numpy_targets(x, 4, 4, 3, cells=2))
    with pytest.raises(ValueError, match="downsample 8 must divide the pixels per token"):
        MaskedPatchPrediction(backbone, target="downsampled_color", downsample=8)


def test_a_backbone_without_class_token_and_grayscale():
    backbone = tiny_backbone(image_size=8, patch_size=2, channels=1, classifier="gap")
    assert backbone.num_prefix_tokens == 0
    model = MaskedPatchPrediction(backbone)
    assert model.num_classes == 8  # 3 bits of one channel
    out = model(images((3, 8, 8, 1)))
    assert tuple(out["predictions"].shape) == (3, 16, 8)


@pytest.mark.skipif(
    "num_register_tokens" not in inspect.signature(ViT).parameters,
    reason="this ViT has no family options (prefix tokens, MAP, sin-cos) yet",
)
@pytest.mark.parametrize(
    "options",
    [
        dict(distillation_token=True, num_register_tokens=4),  # P = 6
        dict(classifier="map", posemb="sincos2d", num_register_tokens=2),
        dict(class_token=False, fc_norm=True, classifier="gap", layer_scale_init=1e-5),
    ],
    ids=["distilled-registers", "map-sincos-registers", "gap-layerscale"],
)
def test_family_backbones_predict_their_patch_tokens(options):
    backbone = tiny_backbone(**options)
    model = MaskedPatchPrediction(backbone, seed=0)
    x = images((2, 16, 16, 3))
    out = model(x)
    assert tuple(out["predictions"].shape) == (2, 16, 512)  # patch tokens only, not the prefix
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, None, model(x, training=True))
    assert float(tf.norm(tape.gradient(loss, model.mask_token))) > 0
    # Predictions are of the patch tokens, which follow the prefix tokens.
    state = model.seed_generator.state.numpy()
    out = model(x)
    model.seed_generator.state.assign(state)
    patches, grid = backbone.embed_patches(x)
    encoded = backbone.encode(model.corrupt(patches["patches"])[0], grid)["encoded"]
    assert encoded.shape[1] == backbone.num_prefix_tokens + 16
    np.testing.assert_allclose(
        out["predictions"], model.head(encoded[:, backbone.num_prefix_tokens :]), atol=1e-6
    )


def test_bad_settings_are_refused_by_name():
    backbone = tiny_backbone()
    for kwargs, message in (
        ({"target": "colour"}, "target must be one of"),
        ({"bits": 0}, "bits must be >= 1"),
        ({"corruption_rate": 1.5}, "corruption_rate must be <= 1"),
        ({"corruption_rate": 0.0}, "corruption_rate must be > 0"),
        ({"mask_rate": 0.9, "random_rate": 0.2}, "mask_rate \\+ random_rate must be <= 1"),
        ({"downsample": 3, "target": "downsampled_color"}, "downsample 3 must divide"),
    ):
        with pytest.raises(ValueError, match=message):
            MaskedPatchPrediction(backbone, **kwargs)
    with pytest.raises(ValueError, match="backbone must be a keras_vit.ViT"):
        MaskedPatchPrediction(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="single patch"):
        MaskedPatchPrediction(tiny_backbone(image_size=4))
    with pytest.raises(ValueError, match="Unknown masked patch prediction setting"):
        check_mpp_settings({"mask_ratio": 0.5})


def _pretrained(tmp_path, backbone):
    model = MaskedPatchPrediction(backbone, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images((8, *backbone.image_size, 3)), epochs=1, batch_size=4, verbose=0)
    return save_official_npz(backbone, str(tmp_path / "backbone.npz"))


def _loads_with_a_new_head(classifier, backbone, num_classes=10):
    variables = {w.path.split("/", 1)[1]: w.numpy() for w in backbone.weights}
    for weight in classifier.weights:
        path = weight.path.split("/", 1)[1]
        if path.startswith("head/"):
            assert not np.any(weight.numpy())  # re-initialised (zeros)
        else:
            np.testing.assert_array_equal(weight.numpy(), variables.pop(path))
    assert not variables  # nothing of the backbone left behind
    assert classifier.head.kernel.shape[-1] == num_classes
    x = images((2, *backbone.image_size, 3), seed=4)
    np.testing.assert_allclose(
        classifier.forward_intermediates(x)["pooled"],
        backbone.forward_intermediates(x)["pooled"],
        atol=1e-6,
    )


def test_a_pretrained_backbone_loads_into_a_classifier(tmp_path):
    backbone = tiny_backbone(semantics="official")
    npz = _pretrained(tmp_path, backbone)
    names = set(np.load(npz).files)
    assert not any("mask" in name or "mpp" in name or name.startswith("head") for name in names)
    with pytest.warns(KerasVitWarning, match="no 'head' layer"):
        classifier = ViT.from_checkpoint(npz, num_classes=10, include_top=True)
    _loads_with_a_new_head(classifier, backbone)


@pytest.mark.slow
def test_a_pretrained_vit_b16_backbone_loads_into_vit_b16(tmp_path):
    backbone = ViT.from_variant("B/16", image_size=32, include_top=False, semantics="official")
    npz = _pretrained(tmp_path, backbone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = keras_vit.ViT_B16(weights=npz, num_classes=10, image_size=32)
    assert any("no 'head' layer" in str(w.message) for w in caught)
    _loads_with_a_new_head(classifier, backbone)
