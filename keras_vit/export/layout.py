"""The export's folder layout and its metadata: one place for both.

An export lives in ``<base>/<model_name>/<version>/`` (TF Serving's layout):
numbered version folders, written in a hidden staging folder
``.tmp-<version>-*`` beside them and renamed into place when complete.
``export_info.json`` in the version folder is an ``ExportInfo``: what every
artifact needs to be run again (input size, channels, labels) and the
parity table of the export.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field

from keras_vit.atomic import write_json_atomic

EXPORT_INFO = "export_info.json"
STAGING_PREFIX = ".tmp-"


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
        parity: list of dict. Parity rows (``keras_vit.export.parity.ParityRow``
            as JSON, paths relative to the version folder).
    """

    image_size: tuple
    channels: int
    dynamic_resolution: bool
    posemb_interpolation: str
    num_classes: int
    labels: list | None = None
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


def staging_folder(model_dir, version):
    """A new hidden folder ``<model_dir>/.tmp-<version>-*`` to write an export into."""
    os.makedirs(model_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=model_dir)


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
