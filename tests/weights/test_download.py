"""Downloads and the cache through file:// URLs and a loopback server (no network)."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from loopback_http import Reply, serve

import keras_vit
from keras_vit.weights import registry
from keras_vit.weights.downloads import DownloadError, DownloadPolicy, download
from keras_vit.weights.registry import Source, WeightsEntry

from conftest import fixture_case

FAST = DownloadPolicy(connect_timeout=2, read_timeout=2, retries=1, backoff=0)


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


def test_a_url_can_pin_its_digest(cache, served):
    _, url, digest = served
    assert Path(download(f"{url}#sha256={digest}", progress=False)).name == "weights.bin"
    with pytest.raises(ValueError, match="Checksum mismatch"):
        download(f"{url}#sha256={'1' * 64}", progress=False)  # the cached file is checked too


def test_unpublished_digest_is_recorded_and_checked(cache, served):
    path, url, digest = served
    local = download(url, progress=False)
    assert Path(local + ".sha256").read_text().strip() == digest
    with open(local, "r+b") as f:  # corrupt the cached copy
        f.write(b"garbage")
    assert download(url, progress=False) == local  # fetched again
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == digest


def test_a_cached_file_without_a_record_is_trusted_once_and_recorded(cache, served):
    path, url, digest = served
    cache.mkdir()
    (cache / "weights.bin").write_bytes(path.read_bytes())
    assert download(url, progress=False) == str(cache / "weights.bin")
    assert (cache / "weights.bin.sha256").read_text().strip() == digest


def test_failed_download_is_an_os_error_naming_the_url(cache, tmp_path):
    url = (tmp_path / "absent.npz").as_uri()
    with pytest.raises(DownloadError, match=f"Could not download {url}: .*No such file"):
        download(url, progress=False)
    assert os.listdir(cache) == []


def test_progress_is_shown_on_stderr(cache, tmp_path, capsys):
    body = os.urandom(1 << 20)
    with serve({"/w.npz": [Reply(200, body)]}) as (base, _):
        download(f"{base}/w.npz", progress=True, policy=FAST)
    err = capsys.readouterr().err
    assert "w.npz" in err and "100%" in err


def test_a_transient_error_is_retried(cache):
    body = os.urandom(4096)
    with serve({"/w.npz": [Reply(503), Reply(200, body)]}) as (base, hits):
        local = download(f"{base}/w.npz", progress=False, policy=FAST)
    assert Path(local).read_bytes() == body and hits["/w.npz"] == 2


def test_factory_downloads_a_registry_name(cache, fixtures_dir, monkeypatch):
    source = fixtures_dir / "vit_token" / "official.npz"
    entry = WeightsEntry(
        "B/16", (Source(source.as_uri(), "official"),), num_classes=10, resolution=32
    )
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
