"""The export's folder layout and its metadata: one place for both.

An export lives in ``<base>/<model_name>/<version>/`` (TF Serving's layout):
numbered version folders, written in a hidden staging folder
``.tmp-<version>-<pid>@<host>-*`` beside them and renamed into place when
complete. A killed export leaves its staging folder behind; the next export
into the same model folder removes those whose process is gone
(``remove_stale_staging``). ``export_info.json`` in the version folder is an
``ExportInfo``: what every artifact needs to be run again (input size,
channels, labels, OpenVINO precision) and the parity table of the export.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from dataclasses import asdict, dataclass, field

from keras_vit.atomic import write_json_atomic
from keras_vit.messages import KerasVitWarning, logger

EXPORT_INFO = "export_info.json"
STAGING_PREFIX = ".tmp-"
# A TF Serving model name that is one folder: no separators, no "..".
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"\d+-(\d+)@(.*)-[^-]+")


@dataclass
class ExportInfo:
    """``export_info.json``: how an export was made and how it compared.

    Attributes:
        image_size: (int, int). Export size ``(height, width)`` (where parity
            was checked; a dynamic-resolution artifact takes others too).
        channels: int. Input channels.
        dynamic_resolution: bool. Artifacts accept any multiple of the patch size.
        posemb_interpolation: str. Resize method of the position embeddings.
        num_classes: int. Classes of the head.
        labels: list of str or None. Class names.
        openvino_precision: str or None. ``INFERENCE_PRECISION_HINT`` the
            OpenVINO IR was checked with (``load_artifact``'s default).
        max_image_pixels: int or None. ``serve_bytes``' image-size limit.
        parity: list of dict. Parity rows (``keras_vit.export.parity.ParityRow``
            as JSON, paths relative to the version folder).
    """

    image_size: tuple
    channels: int
    dynamic_resolution: bool
    posemb_interpolation: str
    num_classes: int
    labels: list | None = None
    openvino_precision: str | None = None
    max_image_pixels: int | None = None
    parity: list = field(default_factory=list)

    def write(self, folder):
        """Writes ``<folder>/export_info.json`` atomically; returns its path."""
        info = {**asdict(self), "image_size": list(self.image_size)}
        return write_json_atomic(info, os.path.join(folder, EXPORT_INFO), indent=1)

    @classmethod
    def read(cls, path):
        """The ``ExportInfo`` beside an exported file or in a version folder, or None.

        Raises:
            ValueError: for a file that is not valid export metadata.
        """
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        info_path = os.path.join(folder, EXPORT_INFO)
        if not os.path.exists(info_path):
            return None
        try:
            with open(info_path, encoding="utf-8") as file:
                info = json.load(file)
            info["image_size"] = tuple(int(s) for s in info["image_size"])
            return cls(**info)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"{info_path} is not valid export metadata ({type(err).__name__}: {err}); "
                "export the model again."
            ) from None


def next_version(model_dir):
    """The next free TF Serving version number under ``model_dir``.

    Args:
        model_dir: str or path. ``<base>/<model_name>``; may not exist yet.

    Returns:
        int. One more than the largest all-digit folder name, or 1.
    """
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def claim_version(model_dir, version=None):
    """``version`` if it is free under ``model_dir``, else the next number.

    Raises:
        ValueError: if ``version`` exists (never overwritten) or is not a
            positive int.
    """
    if version is None:
        return next_version(model_dir)
    if int(version) < 1:
        raise ValueError(f"version must be a positive int, got {version!r}.")
    if os.path.exists(os.path.join(model_dir, str(int(version)))):
        raise ValueError(
            f"Version {version} already exists in {model_dir}; exports never "
            "overwrite a version. Omit the version to take the next free one."
        )
    return int(version)


def checked_model_name(name):
    """``name`` if it is one folder name TF Serving accepts.

    Raises:
        ValueError: for path separators, ``..``, a leading dot or other
            characters than letters, digits, ``.``, ``_`` and ``-``.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            "model_name must be one folder name: letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit, at most 200 characters; got {name!r}."
        )
    return name


def check_output(output_dir, model_name=None):
    """Checks, creating nothing, that an export into ``output_dir`` can start.

    Args:
        output_dir: str or path. Base folder (may not exist yet).
        model_name: optional str. Checked with ``checked_model_name``.

    Raises:
        ValueError: for a bad model name, a file where a folder belongs,
            or no write permission on the nearest existing folder.
    """
    folders = [os.fspath(output_dir)]
    if model_name is not None:
        folders.append(os.path.join(folders[0], checked_model_name(model_name)))
    for folder in folders:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"Cannot export into {folder}: it is a file, not a folder.")
    existing = os.path.abspath(folders[-1])
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"Cannot export into {folders[-1]}: {existing} is not a writable folder "
            "(choose a writable --output)."
        )


def model_folder(output_dir, model_name):
    """``<output_dir>/<model_name>``, created, after ``check_output``.

    Raises:
        ValueError: as ``check_output``, or if the folder cannot be created.
    """
    check_output(output_dir, model_name)
    model_dir = os.path.join(os.fspath(output_dir), model_name)
    with _writable(model_dir):
        os.makedirs(model_dir, exist_ok=True)
    return model_dir


@contextlib.contextmanager
def _writable(folder):
    """Turns an ``OSError`` of creating ``folder`` or a file in it into a ``ValueError``."""
    try:
        yield
    except OSError as err:
        raise ValueError(
            f"Cannot export into {folder}: {err.strerror or err} (choose a writable --output)."
        ) from None


def staging_folder(model_dir, version):
    """A new hidden folder ``<model_dir>/.tmp-<version>-<pid>@<host>-*`` to write an export into.

    Raises:
        ValueError: if ``model_dir`` is not writable.
    """
    with _writable(model_dir):
        os.makedirs(model_dir, exist_ok=True)
        prefix = f"{STAGING_PREFIX}{version}-{os.getpid()}@{_host()}-"
        return tempfile.mkdtemp(prefix=prefix, dir=model_dir)


def _host():
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(model_dir):
    """Removes the staging folders of killed exports from ``model_dir``.

    A staging folder is stale when it was made on this host by a process
    that no longer runs. Others (another host's, or without the owner in
    their name) are left, with a warning naming them.

    Returns:
        list of str: the removed folders.
    """
    removed, unknown = [], []
    if not os.path.isdir(model_dir):
        return removed
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if not name.startswith(STAGING_PREFIX) or not os.path.isdir(path):
            continue
        match = _STAGING.fullmatch(name)
        if match is None or match[2] != _host():
            unknown.append(path)
        elif not _alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logger.info("Removed %d staging folder(s) of killed exports: %s", len(removed), removed)
    if unknown:
        warnings.warn(
            f"Left {len(unknown)} staging folder(s) of other or older exports in {model_dir} "
            f"(remove them when no export is running): {unknown}",
            KerasVitWarning,
            stacklevel=2,
        )
    return removed


def publish(staging, final):
    """Renames the finished staging folder to the version folder (atomic)."""
    if os.path.exists(final):
        raise FileExistsError(f"Version folder {final} appeared during the export.")
    os.chmod(staging, 0o755)  # mkdtemp makes it private; servers read it
    os.rename(staging, final)


def version_folder(path):
    """The SavedModel folder of ``path``: itself, or a TF Serving model folder's newest version.

    Raises:
        ValueError: if ``path`` is neither.
    """
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [name for name in os.listdir(path) if name.isdigit()]
    if versions:
        return version_folder(os.path.join(path, max(versions, key=int)))
    raise ValueError(
        f"{path} is neither a SavedModel folder (no saved_model.pb) nor a TF "
        "Serving model folder with numbered versions."
    )
