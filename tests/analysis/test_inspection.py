"""Inspection: rollout, attention distance, position-embedding similarity,
embedding filters, and the ``keras-vit inspect`` command."""

import math
import struct
from pathlib import Path

import numpy as np
import pytest

import keras_vit
from keras_vit.analysis import inspection, plots
from keras_vit_cli.main import main

from conftest import fixture_case

TINY = dict(image_size=32, patch_size=8, hidden_size=24, num_layers=2, num_heads=2, mlp_dim=48)


def png_size(path):
    """(width, height) from a PNG header; fails for anything else."""
    data = Path(path).read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def uniform_attention(model):
    """Zero query and key projections: every softmax row becomes 1 / tokens."""
    for block in model.blocks:
        for name in ("query", "key"):
            for suffix in ("kernel", "bias"):
                variable = getattr(block.attention, f"{name}_{suffix}")
                variable.assign(np.zeros(variable.shape, "float32"))
    return model


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_rollout_of_uniform_attention_is_uniform(classifier):
    model = uniform_attention(keras_vit.ViT(**TINY, num_classes=3, classifier=classifier))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    attentions, grid = inspection.model_attentions(model, images)
    tokens = model.num_prefix_tokens + 16
    assert grid == (4, 4)
    np.testing.assert_allclose(attentions[0], 1.0 / tokens, rtol=1e-5)
    maps = inspection.attention_rollout(attentions, grid, model.num_prefix_tokens)
    assert maps.shape == (2, 4, 4)
    # Each layer is (J / T + I) / 2, so L layers give I / 2^L + (1 - 2^-L) J / T:
    # the class row holds (1 - 2^-L) / T per patch; the mean row of gap 1 / T.
    layers = model.num_layers
    expected = (1 - 2.0**-layers) / tokens if classifier == "token" else 1.0 / tokens
    np.testing.assert_allclose(maps, expected, rtol=1e-5)


def test_dynamic_resolution_model_is_inspected_on_its_input_grid():
    model = keras_vit.ViT(**TINY, num_classes=3, dynamic_resolution=True)
    images = np.zeros((1, 48, 32, 3), "float32")
    attentions, grid = inspection.model_attentions(model, images)
    assert grid == (6, 4) and attentions[1].shape == (1, 2, 25, 25)
    assert inspection.attention_rollout(attentions, grid, 1).shape == (1, 6, 4)
    distance = inspection.mean_attention_distance(attentions, grid, model.stride, 1)
    assert distance.shape == (1, 2, 2) and np.all(distance > 0)
    with pytest.raises(ValueError, match="not a multiple of the model's total stride 8x8"):
        inspection.model_attentions(model, np.zeros((1, 36, 32, 3), "float32"))


def test_rollout_follows_the_class_token_to_one_patch():
    grid = (2, 3)
    attention = np.full((1, 2, 7, 7), 1.0 / 7)
    attention[:, :, 0] = 0.0
    attention[:, :, 0, 1 + 4] = 1.0  # the class token reads patch row 1, column 1
    maps = inspection.attention_rollout([attention], grid, num_prefix_tokens=1)
    expected = np.zeros((1, 2, 3))
    expected[0, 1, 1] = 0.5  # (row + identity) / 2
    np.testing.assert_allclose(maps, expected, atol=1e-12)


def test_mean_attention_distance_matches_hand_computed_values():
    grid, stride = (2, 2), (8, 16)
    attention = np.zeros((1, 4, 5, 5))
    attention[0, 0, :, 0] = 0.5  # half on the class token (dropped) ...
    attention[0, 0, :, 1:] = 0.125  # ... half spread over the four patches
    for query in range(4):
        row, col = divmod(query, 2)
        attention[0, 1, 1 + query, 1 + query] = 1.0  # itself
        attention[0, 2, 1 + query, 1 + row * 2 + (1 - col)] = 1.0  # horizontal neighbour
        attention[0, 3, 1 + query, 1 + (1 - row) * 2 + col] = 1.0  # vertical neighbour
    attention[0, 1:, 0, 0] = 1.0
    distance = inspection.mean_attention_distance([attention, attention], grid, stride, 1)
    # Uniform over the 2x2 grid: every query sees 0, 16 (across), 8 (down) and hypot(8, 16).
    uniform = (0 + 16 + 8 + math.hypot(8, 16)) / 4
    np.testing.assert_allclose(distance, [[[uniform, 0.0, 16.0, 8.0]] * 2], rtol=1e-12)


def test_position_embedding_similarity_of_row_and_column_codes():
    rows, cols = 3, 4
    codes = [
        np.concatenate([np.eye(rows)[i], np.eye(cols)[j]]) for i in range(rows) for j in range(cols)
    ]
    posemb = np.concatenate([np.full((1, rows + cols), 5.0), codes])[None]
    similarity = inspection.position_embedding_similarity(posemb, (rows, cols), 1)
    i, j, k, m = np.meshgrid(*map(np.arange, (rows, cols, rows, cols)), indexing="ij")
    expected = ((i == k).astype(float) + (j == m)) / 2.0
    np.testing.assert_allclose(similarity, expected, atol=1e-12)
    with pytest.raises(ValueError, match="tokens = 1 \\+ 3x4 = 13"):
        inspection.position_embedding_similarity(posemb[:, 1:], (rows, cols), 1)


def test_embedding_filter_components_recover_the_patterns():
    rng = np.random.default_rng(0)
    vertical = np.zeros((4, 4, 3))
    vertical[:, :2, 0] = 1.0
    horizontal = np.zeros((4, 4, 3))
    horizontal[:2, :, 2] = 1.0
    coefficients = rng.normal(size=(2, 64)) * np.array([[3.0], [1.0]])
    kernel = np.einsum("hwc,f->hwcf", vertical, coefficients[0]) + np.einsum(
        "hwc,f->hwcf", horizontal, coefficients[1]
    )
    components, explained = inspection.embedding_filter_components(kernel, 5)
    assert components.shape == (2, 4, 4, 3)  # rank 2: only two components
    np.testing.assert_allclose(explained.sum(), 1.0, atol=1e-9)
    basis = np.stack([vertical.ravel(), horizontal.ravel()], axis=1)
    found = components.reshape(2, -1).T
    residual = found - basis @ np.linalg.lstsq(basis, found, rcond=None)[0]
    np.testing.assert_allclose(residual, 0.0, atol=1e-9)


def test_figures_have_the_documented_pixel_sizes(tmp_path):
    image = np.zeros((16, 24, 1), "float32")
    written = {
        "rollout": plots.save_rollout_overlay(image, np.ones((2, 3)), tmp_path / "r.png"),
        "attention_distance": plots.save_attention_distance_plot(
            np.ones((3, 2)), tmp_path / "d.png", uniform_distance=2.0
        ),
        "position_similarity": plots.save_position_similarity_plot(
            np.ones((2, 3, 2, 3)), tmp_path / "p.png"
        ),
        "embedding_filters": plots.save_embedding_filters_plot(
            np.ones((5, 4, 4, 1)), tmp_path / "f.png"
        ),
    }
    expected = {
        "rollout": (768, 288),
        "attention_distance": (800, 600),
        "position_similarity": (800, 800),
        "embedding_filters": (800, 520),
    }
    for kind, path in written.items():
        assert png_size(path) == expected[kind], kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "f.png", "p.png", "r.png"]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras_vit.ViT(**TINY, num_classes=3, classifier="gap", name="tiny").save(path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(data.chelsea()).save(folder / "cat.png")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_inspect_command_writes_all_figures(tiny_model_file, image_folder, tmp_path):
    output = tmp_path / "out"
    assert (
        main(
            [
                "inspect",
                "--model",
                str(tiny_model_file),
                str(image_folder),
                str(image_folder / "cat.png"),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    # cat.png, named twice (in the folder and alone), is drawn once
    assert sorted(p.name for p in (output / "rollout").iterdir()) == ["astronaut.png", "cat.png"]
    assert png_size(output / "rollout" / "cat.png") == (768, 288)
    assert png_size(output / "rollout" / "astronaut.png") == (768, 288)
    assert png_size(output / "attention_distance.png") == (800, 600)
    assert png_size(output / "position_embedding_similarity.png") == (800, 800)
    assert png_size(output / "embedding_filters.png") == (800, 520)
    for png in output.rglob("*.png"):
        assert png.stat().st_size > 1000


def test_inspect_command_rejects_bad_input(tiny_model_file, image_folder, tmp_path, capsys):
    assert (
        main(["inspect", "--model", "ViT_Z99", str(image_folder), "--output", str(tmp_path)]) == 2
    )
    assert "Unknown model 'ViT_Z99'" in capsys.readouterr().err
    assert (
        main(
            [
                "inspect",
                "--model",
                str(tiny_model_file),
                str(tmp_path / "missing.png"),
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert (
        main(
            [
                "inspect",
                "--model",
                str(tiny_model_file),
                "--image-size",
                "64",
                str(image_folder),
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "dynamic_resolution" in capsys.readouterr().err


def test_hybrid_filters_come_from_the_resnet_root():
    pytest.importorskip("keras_vit.model.resnet")
    model = keras_vit.ViT(
        image_size=32,
        patch_size=1,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=16,
        num_classes=2,
        resnet_layers=(),
        resnet_width=32,
    )
    kernel, description = inspection.embedding_filters_of(model)
    assert kernel.shape == (7, 7, 3, 32) and "ResNet" in description
    # Weight standardisation: every filter has zero mean and unit variance.
    np.testing.assert_allclose(kernel.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(kernel.std(axis=(0, 1, 2)), 1.0, rtol=1e-3)
    images = np.zeros((1, 32, 32, 3), "float32")
    attentions, grid = inspection.model_attentions(model, images)
    assert model.stride == (4, 4) and grid == (8, 8)
    assert attentions[0].shape == (1, 2, 65, 65)


def test_attention_and_rollout_match_transformers(fixtures_dir):
    """Attention of the Hugging Face fixture against transformers' own
    ``output_attentions`` (eager), and rollout against the usual recipe
    ``0.5 * A + 0.5 * I`` multiplied in torch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from keras_vit import load_weights

    case = fixtures_dir / "hf_vit"
    inputs = np.load(case / "reference.npz")["inputs"]
    model = keras_vit.ViT(
        image_size=32,
        patch_size=8,
        hidden_size=48,
        num_layers=2,
        num_heads=4,
        mlp_dim=192,
        num_classes=10,
        layer_norm_epsilon=1e-12,
    )
    load_weights(model, case / "model.safetensors")
    attentions, grid = inspection.model_attentions(model, inputs)
    reference = transformers.ViTForImageClassification.from_pretrained(
        case, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        expected = reference(
            pixel_values=torch.from_numpy(inputs).permute(0, 3, 1, 2), output_attentions=True
        ).attentions
    for ours, theirs in zip(attentions, expected, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
    joint = torch.eye(17, dtype=torch.float64)
    for layer in expected:
        joint = (0.5 * layer.double().mean(1) + 0.5 * torch.eye(17, dtype=torch.float64)) @ joint
    np.testing.assert_allclose(
        inspection.attention_rollout(attentions, grid, 1),
        joint[:, 0, 1:].reshape(4, 4, 4).numpy(),
        atol=1e-6,
    )


def _numpy_rollout(attentions, rows, prefix):
    """Rollout written out: head mean, + identity, row-normalise, multiply; then ``rows``."""
    joint = None
    for attention in attentions:
        layer = attention.mean(axis=1) + np.eye(attention.shape[-1])
        layer = layer / layer.sum(axis=-1, keepdims=True)
        joint = layer if joint is None else np.einsum("bij,bjk->bik", layer, joint)
    return joint[:, rows].mean(axis=1)[:, prefix:]


def test_rollout_follows_the_head_tokens_never_the_registers():
    rng = np.random.default_rng(5)
    grid, prefix = (2, 3), 4  # class, distillation, 2 registers
    tokens = prefix + 6
    logits = rng.normal(size=(2, 3, 2, tokens, tokens))
    attentions = list(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    deit = inspection.attention_rollout(attentions, grid, prefix, output_tokens=(0, 1))
    np.testing.assert_allclose(deit.reshape(3, -1), _numpy_rollout(attentions, [0, 1], prefix))
    pooled = inspection.attention_rollout(attentions, grid, prefix, output_tokens="patches")
    expected = _numpy_rollout(attentions, list(range(prefix, tokens)), prefix)
    np.testing.assert_allclose(pooled.reshape(3, -1), expected)
    assert not np.allclose(deit, pooled)
    with pytest.raises(ValueError, match="output_tokens must be row indices or 'patches'"):
        inspection.attention_rollout(attentions, grid, prefix, output_tokens="cls")


def test_rollout_rows_and_position_tables_of_the_family():
    tiny = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=1, num_heads=4, mlp_dim=96)
    deit = keras_vit.ViT(**tiny, num_classes=3, distillation_token=True)
    registers = keras_vit.ViT(**tiny, num_classes=3, num_register_tokens=4, posemb="learn_grid")
    sincos = keras_vit.ViT(**tiny, num_classes=3, classifier="gap", posemb="sincos2d")
    assert inspection.rollout_rows(deit) == (0, 1)
    assert inspection.rollout_rows(registers) == (0,)
    assert inspection.rollout_rows(sincos) == "patches"
    assert inspection.position_embedding_of(deit)[0].shape == (18, 48)
    table, grid, prefix = inspection.position_embedding_of(registers)
    assert (table.shape, grid, prefix) == ((16, 48), (4, 4), 0)
    _, reference = fixture_case("vit_sincos_gap")
    table, _, prefix = inspection.position_embedding_of(sincos)
    np.testing.assert_allclose(table, reference["pos_embedding"][0], atol=1e-6)
    none = keras_vit.ViT(**tiny, num_classes=3, classifier="gap", posemb="none")
    with pytest.raises(ValueError, match="no position embeddings"):
        inspection.position_embedding_of(none)
    attentions, grid = inspection.model_attentions(registers, np.zeros((1, 32, 32, 3), "float32"))
    assert attentions[0].shape == (1, 4, 21, 21) and grid == (4, 4)


def test_the_rollout_figure_has_a_colour_bar(tmp_path, monkeypatch):
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path)
    )
    plots.save_rollout_overlay(
        np.zeros((16, 24, 3), "float32"), np.ones((2, 3)), tmp_path / "r.png"
    )
    (figure,) = figures
    bars = [axes for axes in figure.axes if axes.get_ylabel() == "rollout / its maximum"]
    assert len(figure.axes) == 4 and len(bars) == 1  # three panels and the bar
    low, high = bars[0].get_ylim()
    assert (low, high) == (0.0, 1.0)
    assert png_size(tmp_path / "r.png") == (768, 288)


def test_same_named_images_get_names_from_their_paths(
    tiny_model_file, tmp_path, capsys, monkeypatch
):
    from PIL import Image
    from skimage import data

    from keras_vit.data import images as image_io

    for folder in ("a", "b/c"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.fromarray(data.chelsea()).save(tmp_path / "in" / folder / "cat.png")
    fits = []
    load = image_io.load_image
    monkeypatch.setattr(
        image_io,
        "load_image",
        lambda *a, fit="resize", **k: fits.append(fit) or load(*a, fit=fit, **k),
    )
    output = tmp_path / "out"
    args = [
        "inspect",
        "--model",
        str(tiny_model_file),
        str(tmp_path / "in"),
        "--output",
        str(output),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in (output / "rollout").iterdir()) == ["a__cat.png", "b__c__cat.png"]
    out = capsys.readouterr().out
    assert f"named by their path under {tmp_path / 'in'} (a/cat.png -> rollout/a__cat.png)" in out
    assert fits == ["crop", "crop"]  # photos are cropped to the input's shape, not stretched


def test_inspect_checks_matplotlib_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    missing_model = tmp_path / "never-loaded.keras"
    args = [
        "inspect",
        "--model",
        str(missing_model),
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "keras-vit inspect: error: keras-vit inspect (its figures) needs matplotlib, which is not "
        'installed: pip install "keras-vit[inspect]" (or "keras-vit[all]" for every feature).'
    )
    assert not (tmp_path / "o").exists()
