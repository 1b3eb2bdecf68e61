"""Registry downloads and the cache, through file:// URLs the tests write (no network)."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import keras_vit
from keras_vit.weights import registry
from keras_vit.weights.registry import WeightsEntry, download

from conftest import fixture_case


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("KERAS_VIT_CACHE", str(folder))
    return folder


@pytest.fixture
def served(tmp_path):
    """A file and its file:// URL and SHA-256."""
    path = tmp_path / "served" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 << 20))
    return path, path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_caches(cache, served):
    path, url, digest = served
    local = download(url, sha256=digest, progress=False)
    assert os.path.dirname(local) == str(cache)
    assert Path(local).read_bytes() == path.read_bytes()
    path.unlink()  # a second call must not fetch again
    assert download(url, sha256=digest, progress=False) == local


def test_wrong_checksum_leaves_nothing_in_the_cache(cache, served):
    _, url, digest = served
    wrong = "0" * 64
    with pytest.raises(
        ValueError, match=f"Checksum mismatch.*expected sha256 {wrong}, got {digest}"
    ):
        download(url, sha256=wrong, progress=False)
    assert os.listdir(cache) == []


def test_unpublished_digest_is_recorded_and_checked(cache, served):
    path, url, digest = served
    local = download(url, progress=False)
    assert Path(local + ".sha256").read_text().strip() == digest
    with open(local, "r+b") as f:  # corrupt the cached copy
        f.write(b"garbage")
    assert download(url, progress=False) == local  # fetched again
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == digest


def test_failed_download_is_an_os_error(cache, tmp_path):
    with pytest.raises(OSError, match="Could not download"):
        download((tmp_path / "absent.npz").as_uri(), progress=False)
    assert not [f for f in os.listdir(cache) if not f.startswith(".")]


def test_factory_downloads_a_registry_name(cache, fixtures_dir, monkeypatch):
    source = fixtures_dir / "vit_token" / "official.npz"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = WeightsEntry("B/16", source.as_uri(), num_classes=10, resolution=32, sha256=digest)
    monkeypatch.setitem(registry.REGISTRY, "vit_test.fixture", entry)
    _, ref = fixture_case("vit_token")
    model = keras_vit.ViT_B16(
        weights="vit_test.fixture",
        patch_size=8,
        hidden_size=48,
        num_layers=2,
        num_heads=4,
        mlp_dim=192,
    )
    assert (cache / "vit_test.fixture.npz").is_file()
    assert model.image_size == (32, 32)
    assert (
        np.max(np.abs(np.asarray(model(ref["inputs"])) - ref["logits_official_semantics"])) <= 1e-5
    )


def test_registry_entries_are_complete():
    for name, entry in registry.REGISTRY.items():
        arch, _, tag = name.partition(".")
        assert tag and entry.variant in keras_vit.VARIANTS, name
        assert entry.url.startswith("https://storage.googleapis.com/vit_models/"), name
        assert entry.num_classes in (1000, registry.IN21K_CLASSES), name
        assert str(entry.resolution) in arch, name
