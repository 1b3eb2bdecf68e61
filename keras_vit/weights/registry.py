"""Named official checkpoints and their download cache.

Names follow timm's ``architecture.tag`` convention
(``vit_base_patch16_224.augreg_in21k_ft_in1k``): the architecture and the
training recipe are separate facts. Each entry records the keras-vit
variant, the download URL (Google's ``vit_models`` bucket), class count,
resolution, representation size and, where published, the SHA-256.

Files are downloaded once into ``$KERAS_VIT_CACHE`` (default
``~/.cache/keras_vit``) with a progress bar, written to a temporary file and
moved into place only after the checksum matched. For an entry without a
published SHA-256, the digest of the first download is stored next to the
file (``<file>.sha256``) and every later use is checked against it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from keras_vit.atomic import atomic_path, write_bytes_atomic

_BUCKET = "https://storage.googleapis.com/vit_models/"
_IN1K = "--imagenet2012-steps_20k-lr_{lr}-res_{res}.npz"
IN21K_CLASSES = 21843


@dataclass(frozen=True)
class WeightsEntry:
    """One named checkpoint.

    Attributes:
        variant: str. keras-vit variant (``"B/16"``).
        url: str. Download location.
        num_classes: int. Classes of the stored head.
        resolution: int. Training resolution (square).
        representation_size: int or None. Width of the stored ``pre_logits``.
        sha256: str or None. Published digest, when known.
        format: str. Checkpoint format (``"official"`` for the ``.npz``).
    """

    variant: str
    url: str
    num_classes: int
    resolution: int
    representation_size: int | None = None
    sha256: str | None = None
    format: str = "official"


# AugReg (Steiner et al., 2021): i21k pre-training recipe per variant, and the
# ImageNet-1k fine-tuning learning rate at 224/384.
_AUGREG = {
    # timm arch stem, variant, file prefix, i21k recipe, fine-tune lr
    ("vit_tiny_patch16", "Ti/16", "Ti_16", "aug_none-wd_0.03-do_0.0-sd_0.0", "0.03"),
    ("vit_small_patch32", "S/32", "S_32", "aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03"),
    ("vit_small_patch16", "S/16", "S_16", "aug_light1-wd_0.03-do_0.0-sd_0.0", "0.03"),
    ("vit_base_patch32", "B/32", "B_32", "aug_medium1-wd_0.03-do_0.0-sd_0.0", "0.03"),
    ("vit_base_patch16", "B/16", "B_16", "aug_medium1-wd_0.1-do_0.0-sd_0.0", "0.01"),
    ("vit_large_patch16", "L/16", "L_16", "aug_medium1-wd_0.1-do_0.1-sd_0.1", "0.01"),
    ("vit_tiny_r_s16_p8", "R+Ti/16", "R_Ti_16", "aug_none-wd_0.03-do_0.0-sd_0.0", "0.03"),
    ("vit_small_r26_s32", "R26+S/32", "R26_S_32", "aug_light0-wd_0.03-do_0.1-sd_0.1", "0.03"),
}

# The paper's original releases: (timm arch stem, variant, file, representation).
_ORIGINAL = (
    ("vit_base_patch16", "B/16", "ViT-B_16", 768),
    ("vit_base_patch32", "B/32", "ViT-B_32", 768),
    ("vit_large_patch16", "L/16", "ViT-L_16", 1024),
    ("vit_large_patch32", "L/32", "ViT-L_32", 1024),
    ("vit_huge_patch14", "H/14", "ViT-H_14", 1280),
    ("vit_base_r50_s16", "R50+B/16", "R50+ViT-B_16", 768),
)


def _registry():
    entries = {}
    for arch, variant, prefix, recipe, lr in sorted(_AUGREG):
        pretrain = f"{_BUCKET}augreg/{prefix}-i21k-300ep-lr_0.001-{recipe}"
        for res in (224, 384):
            entries[f"{arch}_{res}.augreg_in21k_ft_in1k"] = WeightsEntry(
                variant, pretrain + _IN1K.format(lr=lr, res=res), 1000, res
            )
        if "_r" not in arch:
            entries[f"{arch}_224.augreg_in21k"] = WeightsEntry(
                variant, pretrain + ".npz", IN21K_CLASSES, 224
            )
    for arch, variant, stem, representation in _ORIGINAL:
        entries[f"{arch}_224.orig_in21k"] = WeightsEntry(
            variant, f"{_BUCKET}imagenet21k/{stem}.npz", IN21K_CLASSES, 224, representation
        )
        if variant != "H/14":
            entries[f"{arch}_384.orig_in21k_ft_in1k"] = WeightsEntry(
                variant, f"{_BUCKET}imagenet21k%2Bimagenet2012/{stem}.npz", 1000, 384
            )
    for arch, variant, stem in (
        ("vit_base_patch16", "B/16", "ViT-B_16-224"),
        ("vit_large_patch16", "L/16", "ViT-L_16-224"),
    ):
        entries[f"{arch}_224.orig_in21k_ft_in1k"] = WeightsEntry(
            variant, f"{_BUCKET}imagenet21k%2Bimagenet2012/{stem}.npz", 1000, 224
        )
    return dict(sorted(entries.items()))


REGISTRY = _registry()


def cache_dir():
    """The download cache: ``$KERAS_VIT_CACHE`` or ``~/.cache/keras_vit``."""
    return os.environ.get("KERAS_VIT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_vit"
    )


def get_entry(name):
    """The ``WeightsEntry`` of a registry name.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(
            f"Unknown weights {name!r}: not a file and not a known checkpoint "
            "name. Known names:\n  " + "\n  ".join(REGISTRY)
        )
    return REGISTRY[name]


def fetch(name, progress=True):
    """Local path of a registry checkpoint, downloading it once.

    Args:
        name: str. A key of ``REGISTRY``.
        progress: bool. Show a progress bar.
    """
    entry = get_entry(name)
    suffix = os.path.splitext(urllib.parse.urlparse(entry.url).path)[1]
    return download(entry.url, sha256=entry.sha256, filename=name + suffix, progress=progress)


def download(url, sha256=None, filename=None, directory=None, progress=True):
    """Downloads ``url`` into the cache (once) and verifies it.

    Args:
        url: str. ``https://``, ``http://`` or ``file://`` URL.
        sha256: str or None. Expected hex digest; without it the first
            download's digest is recorded (``<file>.sha256``) and checked on
            every reuse.
        filename: str or None. Name in the cache (default: the URL's).
        directory: str or None. Cache folder (default ``cache_dir()``).
        progress: bool. Show a tqdm progress bar.

    Returns:
        str. Path of the verified file.

    Raises:
        ValueError: on a checksum mismatch (nothing is left in the cache).
        OSError: if the download fails.
    """
    directory = directory or cache_dir()
    os.makedirs(directory, exist_ok=True)
    filename = filename or os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    target = os.path.join(directory, filename)
    if os.path.exists(target):
        expected = sha256 or _recorded_digest(target)
        if expected is None or _sha256_of(target) == expected.lower():
            return target
        os.remove(target)  # corrupt cache entry: fetch it again
    digest = _download_to(url, target, filename, sha256, progress)
    if sha256 is None:
        write_bytes_atomic(f"{digest}\n".encode("ascii"), target + ".sha256")
    return target


def _download_to(url, target, label, sha256, progress):
    from tqdm.auto import tqdm

    hasher = hashlib.sha256()
    try:
        with (
            atomic_path(target, ".part") as partial,
            open(partial, "wb") as out,
            urllib.request.urlopen(url) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=label, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
            digest = hasher.hexdigest()
            if sha256 is not None and digest != sha256.lower():
                raise ValueError(
                    f"Checksum mismatch for {url}: expected sha256 {sha256.lower()}, "
                    f"got {digest}. The download was discarded."
                )
    except urllib.error.URLError as err:
        raise OSError(f"Could not download {url}: {err.reason}") from None
    return digest


def _sha256_of(path):
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _recorded_digest(path):
    try:
        with open(path + ".sha256", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None
