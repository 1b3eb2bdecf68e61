"""Downloads into the cache: timeouts, bounded retries, verified digests, nothing half-written.

``download(url)`` fetches a file once into ``$KERAS_VIT_CACHE`` (default
``~/.cache/keras_vit``) and returns its path:

- the cache folder is checked first (a folder, writable, with room for the
  announced size), so a bad ``KERAS_VIT_CACHE`` fails before any transfer;
- each attempt has a connect timeout and a read timeout (``DownloadPolicy``;
  ``$KERAS_VIT_DOWNLOAD_TIMEOUT`` and ``$KERAS_VIT_DOWNLOAD_RETRIES`` change
  the defaults, e.g. for the command line);
  timeouts, dropped connections, truncated bodies and HTTP 408/429/5xx are
  retried a bounded number of times with exponential back-off; other HTTP
  errors, refused connections and unknown hosts fail at once;
- the bytes go to a temporary file beside the target and are moved into
  place only when complete and verified, so a failure leaves no partial file;
- no public source of ViT weights publishes digests, so trust is on first
  use: the SHA-256 of the first download is recorded next to the file
  (``<file>.sha256``) and every later use is checked against it. A digest
  the user pins (``sha256=``, or ``#sha256=<hex>`` after a URL or registry
  name) is checked instead, on the download and on every reuse.

Every failure is a ``DownloadError`` (an ``OSError``) naming the URL and
what happened, or a ``ValueError`` for a digest mismatch.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from keras_vit.atomic import atomic_path, write_bytes_atomic
from keras_vit.cache import CACHE_ENV, cache_dir
from keras_vit.digests import recorded_digest, sha256_of
from keras_vit.messages import logger
from keras_vit.validation import integer, number

TIMEOUT_ENV = "KERAS_VIT_DOWNLOAD_TIMEOUT"
RETRIES_ENV = "KERAS_VIT_DOWNLOAD_RETRIES"
PIN_MARKER = "#sha256="
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadPolicy:
    """How long to wait and how often to try.

    Attributes:
        connect_timeout: float. Seconds to wait for a connection.
        read_timeout: float. Seconds to wait for the response headers and for
            each read of the body (a server that stops sending fails after this).
        retries: int. Further attempts after a transient failure (0 = one try).
        backoff: float. Seconds before the first retry, doubled for each next one.
    """

    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 2
    backoff: float = 1.0

    def __post_init__(self):
        number(self.connect_timeout, "connect_timeout", 0, exclusive_minimum=True)
        number(self.read_timeout, "read_timeout", 0, exclusive_minimum=True)
        integer(self.retries, "retries", 0)
        number(self.backoff, "backoff", 0)

    @classmethod
    def from_env(cls):
        """The defaults, with ``$KERAS_VIT_DOWNLOAD_TIMEOUT`` (seconds, for both
        timeouts) and ``$KERAS_VIT_DOWNLOAD_RETRIES`` applied when set.

        Raises:
            ValueError: naming the variable, for a value that is not a
                positive number (timeout) or a non-negative integer (retries).
        """
        changes = {}
        timeout, retries = os.environ.get(TIMEOUT_ENV), os.environ.get(RETRIES_ENV)
        if timeout:
            seconds = _parsed(timeout, float, TIMEOUT_ENV, "a number of seconds > 0")
            changes.update(connect_timeout=seconds, read_timeout=seconds)
        if retries:
            changes["retries"] = _parsed(retries, int, RETRIES_ENV, "an integer >= 0")
        try:
            return cls(**changes)
        except ValueError as err:
            raise ValueError(f"{TIMEOUT_ENV} / {RETRIES_ENV}: {err}") from None


def _parsed(text, kind, name, expected):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {expected}, got {text!r}.") from None


class DownloadError(OSError):
    """A download failed; the message names the URL and the reason.

    Attributes:
        url: str. What was being downloaded.
        transient: bool. Whether trying again later may succeed (timeouts,
            dropped connections, HTTP 408/429/5xx).
    """

    def __init__(self, url, reason, transient=False):
        super().__init__(f"Could not download {url}: {reason}")
        self.url = url
        self.reason = reason
        self.transient = transient


def split_pin(spec):
    """``"NAME_OR_URL#sha256=HEX"`` -> ``("NAME_OR_URL", "hex")``; without a pin ``(spec, None)``.

    Raises:
        ValueError: for a pin that is not 64 hexadecimal digits.
    """
    base, marker, digest = spec.partition(PIN_MARKER)
    if not marker:
        return spec, None
    return base, checked_digest(digest)


def checked_digest(digest):
    """A SHA-256 hex digest in lower case.

    Raises:
        ValueError: unless ``digest`` is 64 hexadecimal digits.
    """
    text = str(digest).strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"A sha256 digest must be 64 hexadecimal digits, got {digest!r}.")
    return text


def prepare_cache(directory):
    """Creates ``directory`` if needed and checks that files can be written there.

    Raises:
        OSError: naming the folder (and ``KERAS_VIT_CACHE``) when it is a
            file, cannot be created or is not writable.
    """
    hint = f"set {CACHE_ENV} to a writable folder"
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"The weights cache {directory} is a file, not a folder: {hint}")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as err:
        raise type(err)(
            f"The weights cache {directory} is not writable ({err.strerror}): {hint}"
        ) from None
    return directory


def cached_file(path, sha256=None):
    """``path`` if it exists and matches ``sha256`` (or its recorded digest), else None.

    A file without a record gets one now (trust on first use; skipped, with a
    notice, in a read-only cache). A file that disagrees is left where it is:
    a new download replaces it atomically.
    """
    if not os.path.isfile(path):
        return None
    digest = sha256_of(path)
    expected = sha256 or recorded_digest(path)
    if expected is None:
        try:
            record_digest(path, digest)
        except OSError as err:
            logger.info("Could not record the sha256 of %s (%s).", path, err.strerror or err)
        return path
    if digest == expected:
        return path
    logger.info(
        "Cached %s has sha256 %s, expected %s; downloading it again.", path, digest, expected
    )
    return None


def download(url, sha256=None, filename=None, directory=None, progress=True, policy=None):
    """Downloads ``url`` into the cache (once) and verifies it.

    Args:
        url: str. ``https://``, ``http://`` or ``file://`` URL; a
            ``#sha256=<hex>`` suffix pins the digest.
        sha256: str or None. Expected hex digest, checked on the download
            and on every reuse. The digest of what was downloaded is recorded
            (``<file>.sha256``) and, without a pin, checked on every reuse.
        filename: str or None. Name in the cache (default: the URL's).
        directory: str or None. Cache folder (default ``cache_dir()``).
        progress: bool. Show a tqdm progress bar on stderr.
        policy: ``DownloadPolicy`` or None (``DownloadPolicy.from_env()``).

    Returns:
        str. Path of the verified file.

    Raises:
        ValueError: on a digest mismatch (nothing is left in the cache), or
            for a malformed pin.
        DownloadError: (an ``OSError``) if the download fails, naming the URL.
        OSError: if the file is not cached and the cache folder is not
            usable (a file, not creatable or not writable).
    """
    url, pinned = split_pin(url)
    sha256 = checked_digest(sha256) if sha256 is not None else pinned
    directory = directory or cache_dir()
    filename = filename or os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not filename:
        raise ValueError(f"Cannot tell a file name for {url!r}; pass filename=...")
    target = os.path.join(directory, filename)
    if cached_file(target, sha256) is not None:  # a read-only cache is fine for this
        return target
    prepare_cache(directory)
    record_digest(
        target, fetch_to(url, target, sha256, progress, policy or DownloadPolicy.from_env())
    )
    return target


def fetch_to(url, target, sha256=None, progress=True, policy=None):
    """Downloads ``url`` to ``target`` with retries; returns the SHA-256 hex digest.

    Raises:
        DownloadError: after the last attempt, naming the URL and the reason.
        ValueError: if the bytes do not match ``sha256`` (not retried).
    """
    policy = policy or DownloadPolicy.from_env()
    for attempt in range(policy.retries + 1):
        try:
            return _fetch_once(url, target, sha256, progress, policy)
        except DownloadError as err:
            if not err.transient or attempt == policy.retries:
                if attempt:
                    raise DownloadError(
                        url, f"{err.reason} (after {attempt + 1} attempts)", err.transient
                    ) from None
                raise
            delay = policy.backoff * 2**attempt
            logger.info("%s; trying again in %.0f s.", err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fetch_once(url, target, sha256, progress, policy):
    from tqdm.auto import tqdm

    hasher = hashlib.sha256()
    label = os.path.basename(target)
    try:
        with (
            _open(url, policy) as response,
            atomic_path(target, ".part") as partial,
            open(partial, "wb") as out,
        ):
            total = _content_length(response)
            _check_room(os.path.dirname(target), total, url)
            received = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(
                    url, f"the transfer was cut short ({received} of {total} bytes)", True
                )
            digest = hasher.hexdigest()
            if sha256 is not None and digest != sha256:
                raise ValueError(
                    f"Checksum mismatch for {url}: expected sha256 {sha256}, got {digest}. "
                    "The download was discarded."
                )
    except TimeoutError:
        raise DownloadError(
            url, f"no answer within the read timeout of {policy.read_timeout:g} s", True
        ) from None
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as err:
        raise DownloadError(url, f"the connection was dropped ({err})", True) from None
    except http.client.HTTPException as err:
        raise DownloadError(url, f"a broken HTTP response ({type(err).__name__})", True) from None
    return digest


def _open(url, policy):
    """The response of ``url``, or a ``DownloadError`` saying why not."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"Cannot download {url!r}: expected an http(s):// or file:// URL.")
    request = urllib.request.Request(url, headers={"User-Agent": "keras-vit"})
    try:
        return _opener(policy).open(request, timeout=policy.connect_timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            url, f"HTTP {err.code} {err.reason}", err.code in _RETRY_STATUS
        ) from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError):
            raise DownloadError(
                url, f"no connection within {policy.connect_timeout:g} s", True
            ) from None
        transient = isinstance(reason, (ConnectionResetError, ConnectionAbortedError))
        raise DownloadError(url, str(reason), transient) from None
    except TimeoutError:
        raise DownloadError(
            url, f"no answer within the read timeout of {policy.read_timeout:g} s", True
        ) from None
    except (ConnectionResetError, ConnectionAbortedError) as err:
        raise DownloadError(url, f"the connection was dropped ({err})", True) from None
    except http.client.HTTPException as err:
        raise DownloadError(url, f"a broken HTTP response ({type(err).__name__})", True) from None


def _opener(policy):
    """A urllib opener whose HTTP(S) connections switch to ``read_timeout`` once connected."""

    def timed(connection_class):
        class Timed(connection_class):
            def connect(self):
                super().connect()  # under the connect timeout given to open()
                self.sock.settimeout(policy.read_timeout)

        return Timed

    http_connection = timed(http.client.HTTPConnection)
    https_connection = timed(http.client.HTTPSConnection)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_connection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def __init__(self):
            super().__init__()
            self.ssl_context = ssl.create_default_context()

        def https_open(self, req):
            return self.do_open(https_connection, req, context=self.ssl_context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _content_length(response):
    length = response.headers.get("Content-Length")
    try:
        return int(length) if length is not None else None
    except ValueError:
        return None


def _check_room(directory, total, url):
    if total is None:
        return
    free = shutil.disk_usage(directory).free
    if total > free:
        raise DownloadError(
            url,
            f"it needs {total / 1e6:.0f} MB and the cache {directory} has {free / 1e6:.0f} MB "
            f"free: free some space or set {CACHE_ENV} to another folder",
        )


def record_digest(path, digest):
    """Records ``digest`` next to ``path`` (``<path>.sha256``), atomically."""
    write_bytes_atomic(f"{digest}\n".encode("ascii"), path + ".sha256")
