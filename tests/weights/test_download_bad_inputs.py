"""Downloads that go wrong: each a clear error naming the URL, in bounded time, leaving no
partial file. Servers run on 127.0.0.1 only (tests/weights/loopback_http.py)."""

import os
import socket
import subprocess
import sys
import time

import pytest
from loopback_http import Reply, serve, silent_listener

from keras_vit.weights import registry
from keras_vit.weights.downloads import DownloadError, DownloadPolicy, download
from keras_vit.weights.registry import Source, WeightsEntry


def policy(retries=0, timeout=0.5):
    return DownloadPolicy(connect_timeout=timeout, read_timeout=timeout, retries=retries, backoff=0)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("KERAS_VIT_CACHE", str(folder))
    return folder


def leftovers(folder):
    """Files in the cache (a partial download would show here)."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_server_that_never_answers_times_out(cache):
    with silent_listener() as base:
        url = f"{base}/weights.npz"
        start = time.monotonic()
        with pytest.raises(DownloadError) as caught:
            download(url, progress=False, policy=policy(retries=0))
        elapsed = time.monotonic() - start
    assert str(caught.value) == (
        f"Could not download {url}: no answer within the read timeout of 0.5 s"
    )
    assert caught.value.transient and elapsed < 10
    assert leftovers(cache) == []


def test_retries_are_bounded_and_counted(cache):
    with silent_listener() as base:
        url = f"{base}/weights.npz"
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"read timeout of 0.5 s \(after 3 attempts\)"):
            download(url, progress=False, policy=policy(retries=2))
        assert time.monotonic() - start < 20
    assert leftovers(cache) == []


def test_a_body_that_stalls_times_out_and_leaves_no_partial_file(cache):
    with (
        serve({"/w.npz": [Reply(200, b"x" * 1000, length=5000, stall=True)]}) as (base, hits),
        pytest.raises(DownloadError, match="read timeout of 0.5 s"),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy(retries=1))
    assert hits["/w.npz"] == 2  # a stall is transient: tried again, once
    assert leftovers(cache) == []


def test_a_truncated_body_is_retried_then_refused(cache):
    with (
        serve({"/w.npz": [Reply(200, b"x" * 10, length=1000)]}) as (base, hits),
        pytest.raises(
            DownloadError, match=r"transfer was cut short \(10 of 1000 bytes\) \(after 2 attempts\)"
        ),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy(retries=1))
    assert hits["/w.npz"] == 2
    assert leftovers(cache) == []


@pytest.mark.parametrize("status, attempts", [(404, 1), (403, 1), (500, 3), (429, 3)])
def test_http_errors_name_the_status_and_only_transient_ones_are_retried(cache, status, attempts):
    with (
        serve({"/w.npz": [Reply(status, b"no")]}) as (base, hits),
        pytest.raises(DownloadError, match=f"Could not download {base}/w.npz: HTTP {status}"),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy(retries=2))
    assert hits["/w.npz"] == attempts
    assert leftovers(cache) == []


def test_a_refused_connection_fails_at_once(cache):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/w.npz"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=f"Could not download {url}: .*[Rr]efused"):
        download(url, progress=False, policy=policy(retries=3, timeout=5))
    assert time.monotonic() - start < 5  # refused is not retried
    assert leftovers(cache) == []


def test_a_size_beyond_the_free_space_is_refused_before_writing(cache):
    with (
        serve({"/w.npz": [Reply(200, b"", length=10**15)]}) as (base, _),
        pytest.raises(DownloadError, match=r"needs 1000000000 MB and the cache .* free"),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy())
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://127.0.0.1/w.npz", "expected an http\\(s\\):// or file:// URL"),
        ("http://127.0.0.1:9/", "Cannot tell a file name"),
        ("http://127.0.0.1:9/w.npz#sha256=xyz", "64 hexadecimal digits, got 'xyz'"),
    ],
)
def test_bad_urls_are_value_errors(cache, url, message):
    with pytest.raises(ValueError, match=message):
        download(url, progress=False, policy=policy())
    assert leftovers(cache) == []


def test_a_cache_that_is_a_file_fails_before_any_request(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("in the way")
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    with (
        serve({"/w.npz": [Reply(200, b"x")]}) as (base, hits),
        pytest.raises(NotADirectoryError, match="is a file, not a folder: set KERAS_VIT_CACHE"),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy())
    assert hits["/w.npz"] == 0
    assert (tmp_path / "cache").read_text() == "in the way"


def test_a_cache_below_a_file_cannot_be_created(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(OSError, match="is not writable .*: set KERAS_VIT_CACHE to a writable"):
        download((tmp_path / "file").as_uri(), progress=False)


@pytest.fixture
def unwritable_folder(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    folder = "/sys/keras-vit-test-cache"  # refused even to root on this machine kind
    try:
        os.mkdir(folder)
    except OSError:
        yield folder
        return
    os.rmdir(folder)
    pytest.skip("no folder here is unwritable for root")


def test_an_unwritable_cache_fails_before_any_request(unwritable_folder, monkeypatch):
    monkeypatch.setenv("KERAS_VIT_CACHE", str(unwritable_folder))
    with (
        serve({"/w.npz": [Reply(200, b"x")]}) as (base, hits),
        pytest.raises(OSError, match=f"The weights cache {unwritable_folder} is not writable"),
    ):
        download(f"{base}/w.npz", progress=False, policy=policy())
    assert hits["/w.npz"] == 0


def test_registry_fetch_checks_the_cache_first(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("in the way")
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    entry = WeightsEntry(
        "B/16", (Source((tmp_path / "x.npz").as_uri(), "official"),), num_classes=1, resolution=32
    )
    monkeypatch.setitem(registry.REGISTRY, "vit_test.cache", entry)
    with pytest.raises(NotADirectoryError, match="KERAS_VIT_CACHE"):
        registry.fetch("vit_test.cache", progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(connect_timeout=0), "connect_timeout must be > 0, got 0.0"),
        (dict(read_timeout=-1), "read_timeout must be > 0, got -1.0"),
        (dict(read_timeout="5"), "read_timeout must be a number, got '5' \\(str\\)"),
        (dict(retries=-1), "retries must be >= 0, got -1"),
        (dict(retries=1.5), "retries must be an int, got 1.5"),
        (dict(backoff=float("nan")), "backoff must be a finite number"),
    ],
)
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DownloadPolicy(**kwargs)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KERAS_VIT_DOWNLOAD_TIMEOUT": "soon"}, "KERAS_VIT_DOWNLOAD_TIMEOUT must be a number"),
        ({"KERAS_VIT_DOWNLOAD_TIMEOUT": "0"}, "connect_timeout must be > 0"),
        ({"KERAS_VIT_DOWNLOAD_RETRIES": "2.5"}, "KERAS_VIT_DOWNLOAD_RETRIES must be an integer"),
        ({"KERAS_VIT_DOWNLOAD_RETRIES": "-1"}, "retries must be >= 0, got -1"),
    ],
)
def test_bad_download_settings_in_the_environment(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        DownloadPolicy.from_env()


def test_the_cli_reports_a_hanging_server_in_one_line(tmp_path):
    env = dict(
        os.environ,
        KERAS_VIT_CACHE=str(tmp_path / "cache"),
        KERAS_VIT_DOWNLOAD_TIMEOUT="1",
        KERAS_VIT_DOWNLOAD_RETRIES="1",
    )
    with silent_listener() as base:
        url = f"{base}/w.npz"
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "keras_vit_cli", "convert", url, str(tmp_path / "out.keras")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"keras-vit convert: error: Could not download {url}: no answer within the read "
        "timeout of 1 s (after 2 attempts)"
    )
    assert "Traceback" not in result.stderr
    assert elapsed < 60
    assert not (tmp_path / "out.keras").exists() and leftovers(tmp_path / "cache") == []


def test_a_read_only_cache_still_serves_what_it_holds(cache, tmp_path, monkeypatch):
    # A pre-filled cache that cannot be written (shared, mounted read-only) works for the files it
    # holds; only a download needs a writable folder. Root ignores permissions, so the refusals
    # are simulated where keras-vit writes.
    from keras_vit.weights import downloads as module

    cache.mkdir()
    (cache / "w.npz").write_bytes(b"weights")
    refused = OSError(30, "Read-only file system")

    def read_only(*args):
        raise refused

    monkeypatch.setattr(module, "prepare_cache", read_only)
    monkeypatch.setattr(module, "record_digest", read_only)
    with serve({"/w.npz": [Reply(200, b"other")]}) as (base, hits):
        assert download(f"{base}/w.npz", progress=False, policy=policy()) == str(cache / "w.npz")
        assert hits["/w.npz"] == 0
        with pytest.raises(OSError, match="Read-only"):  # not cached: the download needs to write
            download(f"{base}/v.npz", progress=False, policy=policy())
