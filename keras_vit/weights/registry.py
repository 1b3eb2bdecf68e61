"""Named checkpoints: what each model is, and where its file can be downloaded.

Names are ``architecture.tag`` (``vit_base_patch16_224.augreg_in21k_ft_in1k``):
the architecture (a key of ``ARCHITECTURES``: variant, resolution and the
structural ``ViT`` options) and the training recipe are separate facts.

Naming rule: a name that timm uses is timm's name for the same weights (the
same Google file, or the file of timm's hub repository ``timm/<name>``). A
Google file that timm does not list has a tag starting with ``google_``
(``vit_large_patch16_384.google_orig_in21k_ft_in1k``): keras-vit's name,
never to be taken for timm's.

Each entry lists several ``Source``s, tried in order until one works
(Google's bucket refused anonymous downloads for weeks in 2026; timm mirrors
every Google file that it names on the Hugging Face hub as safetensors). The
cached file is ``<name>.npz`` (official / big_vision layout) or
``<name>.safetensors`` (timm layout), the suffix the readers dispatch on.
Google-trained weights keep ``semantics="official"`` (tanh GELU, as trained)
and ``posemb_interpolation="official"`` whichever source is downloaded, so
the source does not change the numerics.

No public source publishes digests: the first download's SHA-256 is recorded
next to the file and checked on every reuse (``keras_vit.weights.downloads``);
``fetch(name, sha256=...)`` or the name ``"<name>#sha256=<hex>"`` pins one.
"""

from __future__ import annotations

import os
import types
import urllib.parse
from dataclasses import dataclass, field

from keras_vit.cache import cache_dir
from keras_vit.messages import logger
from keras_vit.validation import choice, integer, number
from keras_vit.weights.downloads import (
    DownloadError,
    cached_file,
    checked_digest,
    download,
    prepare_cache,
    split_pin,
)

IN21K_CLASSES = 21843
GOOGLE = "https://storage.googleapis.com/vit_models/"
BIG_VISION = "https://storage.googleapis.com/big_vision/"
TIMM_HUB = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"

#: Source format -> suffix of the cached file (what ``read_checkpoint`` dispatches on).
FORMAT_SUFFIXES = {"official": ".npz", "timm": ".safetensors"}

#: The values each option takes (``ViT`` arguments beyond the variant table).
CLASSIFIERS = ("token", "gap", "map", "unpooled")
POSEMBS = ("learn", "learn_grid", "sincos2d", "none")
SEMANTICS = ("official", "timm")
POSEMB_INTERPOLATIONS = ("official", "bilinear", "bicubic", "bicubic_hf")
OPTION_NAMES = (
    "class_token",
    "distillation_token",
    "num_register_tokens",
    "posemb",
    "layer_scale_init",
    "classifier",
    "fc_norm",
    "semantics",
    "posemb_interpolation",
)

#: Input normalisation ``(mean, std)`` on [0, 1] pixels the weights were trained with.
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # x / 127.5 - 1: preprocess_input
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: Who serves each URL prefix (the README table's source column).
HOSTS = {GOOGLE: "Google", BIG_VISION: "big_vision", TIMM_HUB.partition("{")[0]: "timm hub"}


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be downloaded from.

    Attributes:
        url: str. Download URL (``+`` and other reserved characters quoted).
        format: str. ``"official"`` (``.npz``) or ``"timm"`` (``.safetensors``).
    """

    url: str
    format: str

    def __post_init__(self):
        choice(self.format, "format", tuple(FORMAT_SUFFIXES))

    @property
    def suffix(self):
        """Suffix of the cached file: ``.npz`` or ``.safetensors``."""
        return FORMAT_SUFFIXES[self.format]

    @property
    def host(self):
        """Who serves it: ``"Google"``, ``"big_vision"``, ``"timm hub"`` or the URL's host."""
        for prefix, host in HOSTS.items():
            if self.url.startswith(prefix):
                return host
        return urllib.parse.urlparse(self.url).netloc


@dataclass(frozen=True)
class Architecture:
    """A model architecture: variant, native resolution and structural options.

    Attributes:
        variant: str. keras-vit variant (``"B/16"``).
        resolution: int. Native (square) input size.
        options: mapping of structural ``ViT`` options (``OPTION_NAMES``).
    """

    variant: str
    resolution: int
    options: types.MappingProxyType = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsEntry:
    """One named checkpoint: the model it builds and where to get it.

    Attributes:
        variant: str. keras-vit variant (``"B/16"``).
        sources: tuple of ``Source``, tried in order.
        num_classes: int. Classes of the head (0: no head).
        resolution: int. Training resolution (square).
        representation_size: int or None. Width of a ``pre_logits`` layer.
        options: read-only mapping. Every ``ViT`` option of ``OPTION_NAMES``
            (defaults for ``ViT.from_variant(variant, weights=name)``).
        mean, std: tuples of 3 floats. Input normalisation on [0, 1] pixels
            the weights were trained with (``INCEPTION`` is
            ``preprocess_input``'s [-1, 1]; ``IMAGENET`` for DeiT / DINOv2).
        description: str. What the weights are, in a few words.
    """

    variant: str
    sources: tuple
    num_classes: int
    resolution: int
    representation_size: int | None = None
    options: types.MappingProxyType = field(default_factory=dict)
    mean: tuple = INCEPTION[0]
    std: tuple = INCEPTION[1]
    description: str = ""

    def __post_init__(self):
        if not self.sources:
            raise ValueError(f"A weights entry needs at least one source; got {self.sources!r}.")
        integer(self.num_classes, "num_classes", 0)
        integer(self.resolution, "resolution", 1)
        if self.representation_size is not None:
            integer(self.representation_size, "representation_size", 1)
        check_options(self.options)

    @property
    def url(self):
        """URL of the first source."""
        return self.sources[0].url


def check_options(options):
    """Checks a mapping of ``ViT`` options by name and value.

    Raises:
        ValueError: for an unknown name or a value of the wrong kind, naming
            what was expected.
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Unknown ViT options {unknown}; expected some of {OPTION_NAMES}.")
    for flag in ("distillation_token", "fc_norm"):
        if flag in options and not isinstance(options[flag], bool):
            raise ValueError(f"{flag} must be a bool, got {options[flag]!r}.")
    if options.get("class_token") not in (None, True, False):
        raise ValueError(f"class_token must be a bool or None, got {options['class_token']!r}.")
    if "num_register_tokens" in options:
        integer(options["num_register_tokens"], "num_register_tokens", 0)
    if options.get("layer_scale_init") is not None:
        number(options["layer_scale_init"], "layer_scale_init", 0, exclusive_minimum=True)
    for name, choices in (
        ("posemb", POSEMBS),
        ("classifier", CLASSIFIERS),
        ("semantics", SEMANTICS),
        ("posemb_interpolation", POSEMB_INTERPOLATIONS),
    ):
        if name in options:
            choice(options[name], name, choices)
    return options


# Structural options of the families (every OPTION_NAMES key but the training ones).
PLAIN = dict(
    class_token=True,
    distillation_token=False,
    num_register_tokens=0,
    posemb="learn",  # learned, with an entry for the class token (original ViT / timm)
    layer_scale_init=None,
    classifier="token",
    fc_norm=False,
)
DEIT_DISTILLED = dict(PLAIN, distillation_token=True)  # timm VisionTransformerDistilled
DEIT3 = dict(PLAIN, posemb="learn_grid", layer_scale_init=1e-6)  # no_embed_class, init_values
DINOV2 = dict(PLAIN, layer_scale_init=1e-5)  # timm vit_*_patch14_dinov2: init_values=1e-5
DINOV2_REG4 = dict(DINOV2, num_register_tokens=4, posemb="learn_grid")  # reg_tokens=4
SIGLIP = dict(PLAIN, class_token=False, posemb="learn_grid", classifier="map")
REG4_GAP = dict(  # timm vit_base_patch16_reg4_gap_256: avg pool of the patches + fc_norm
    PLAIN,
    class_token=False,
    num_register_tokens=4,
    posemb="learn_grid",
    classifier="gap",
    fc_norm=True,
)

# Numerics of who trained the weights (the rest of OPTION_NAMES).
GOOGLE_TRAINED = dict(semantics="official", posemb_interpolation="official")  # JAX, tanh GELU
TORCH_TRAINED = dict(semantics="timm", posemb_interpolation="bicubic")  # PyTorch, exact GELU


def _architectures():
    table = {
        "vit_tiny_patch16_224": ("Ti/16", 224, PLAIN),
        "vit_tiny_patch16_384": ("Ti/16", 384, PLAIN),
        "vit_small_patch32_224": ("S/32", 224, PLAIN),
        "vit_small_patch32_384": ("S/32", 384, PLAIN),
        "vit_small_patch16_224": ("S/16", 224, PLAIN),
        "vit_small_patch16_384": ("S/16", 384, PLAIN),
        "vit_base_patch32_224": ("B/32", 224, PLAIN),
        "vit_base_patch32_384": ("B/32", 384, PLAIN),
        "vit_base_patch16_224": ("B/16", 224, PLAIN),
        "vit_base_patch16_384": ("B/16", 384, PLAIN),
        "vit_base_patch8_224": ("B/8", 224, PLAIN),
        "vit_large_patch32_224": ("L/32", 224, PLAIN),
        "vit_large_patch32_384": ("L/32", 384, PLAIN),
        "vit_large_patch16_224": ("L/16", 224, PLAIN),
        "vit_large_patch16_384": ("L/16", 384, PLAIN),
        "vit_huge_patch14_224": ("H/14", 224, PLAIN),
        "vit_tiny_r_s16_p8_224": ("R+Ti/16", 224, PLAIN),
        "vit_tiny_r_s16_p8_384": ("R+Ti/16", 384, PLAIN),
        "vit_small_r26_s32_224": ("R26+S/32", 224, PLAIN),
        "vit_small_r26_s32_384": ("R26+S/32", 384, PLAIN),
        "vit_base_r26_s32_224": ("R26+B/32", 224, PLAIN),  # timm: untrained
        "vit_base_r50_s16_224": ("R50+B/16", 224, PLAIN),
        "vit_base_r50_s16_384": ("R50+B/16", 384, PLAIN),
        "vit_large_r50_s32_224": ("R50+L/32", 224, PLAIN),
        "vit_large_r50_s32_384": ("R50+L/32", 384, PLAIN),
        "deit_tiny_distilled_patch16_224": ("Ti/16", 224, DEIT_DISTILLED),
        "deit_small_distilled_patch16_224": ("S/16", 224, DEIT_DISTILLED),
        "deit_base_distilled_patch16_224": ("B/16", 224, DEIT_DISTILLED),
        "deit3_small_patch16_224": ("S/16", 224, DEIT3),
        "deit3_base_patch16_224": ("B/16", 224, DEIT3),
        "vit_small_patch14_dinov2": ("S/14", 518, DINOV2),
        "vit_base_patch14_dinov2": ("B/14", 518, DINOV2),
        "vit_large_patch14_dinov2": ("L/14", 518, DINOV2),
        "vit_small_patch14_reg4_dinov2": ("S/14", 518, DINOV2_REG4),
        "vit_base_patch14_reg4_dinov2": ("B/14", 518, DINOV2_REG4),
        "vit_large_patch14_reg4_dinov2": ("L/14", 518, DINOV2_REG4),
        "vit_base_patch16_siglip_224": ("B/16", 224, SIGLIP),
        "vit_base_patch16_reg4_gap_256": ("B/16", 256, REG4_GAP),  # timm: untrained
    }
    return {
        name: Architecture(variant, res, types.MappingProxyType(dict(options)))
        for name, (variant, res, options) in sorted(table.items())
    }


#: timm architecture name -> ``Architecture``.
ARCHITECTURES = _architectures()

_AUGREG_FT = "--imagenet2012-steps_20k-lr_{lr}-res_{res}"

# Google files by timm name (paths under vit_models/, without ".npz"), as timm's
# default_cfgs list them: AugReg (Steiner et al., 2021) fine-tunes start from the
# pre-training named; the 384 fine-tunes of B/32, R26+S/32 and R50+L/32 start from
# another pre-training than the 224 ones.
_AUGREG = {
    # i21k pre-training -> (timm architecture stem, its fine-tunes: res -> lr)
    "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0": (
        "vit_tiny_patch16",
        {224: "0.03", 384: "0.03"},
    ),
    "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0": (
        "vit_small_patch32",
        {224: "0.03", 384: "0.03"},
    ),
    "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0": (
        "vit_small_patch16",
        {224: "0.03", 384: "0.03"},
    ),
    "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0": (
        "vit_base_patch32",
        {224: "0.03"},
    ),
    "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0": ("vit_base_patch32", {384: "0.03"}),
    "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0": (
        "vit_base_patch16",
        {224: "0.01", 384: "0.01"},
    ),
    "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0": ("vit_base_patch8", {224: "0.01"}),
    "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1": (
        "vit_large_patch16",
        {224: "0.01", 384: "0.01"},
    ),
    "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0": (
        "vit_tiny_r_s16_p8",
        {224: "0.03", 384: "0.03"},
    ),
    "R26_S_32-i21k-300ep-lr_0.001-aug_light0-wd_0.03-do_0.1-sd_0.1": (
        "vit_small_r26_s32",
        {224: "0.03"},
    ),
    "R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0": (
        "vit_small_r26_s32",
        {384: "0.03"},
    ),
    "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1": (
        "vit_large_r50_s32",
        {224: "0.01"},
    ),
    "R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0": (
        "vit_large_r50_s32",
        {384: "0.01"},
    ),
}
# The i21k pre-trainings timm publishes as ``<arch>_224.augreg_in21k`` (with their 21k head).
_AUGREG_IN21K = (
    "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
    "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
    "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
    "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0",
    "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
    "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
    "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1",
    "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
    "R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0",
    "R50_L_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0",
)
# ImageNet-1k-only AugReg pre-trainings and their fine-tune lr (224 and 384).
_AUGREG_IN1K = {
    "S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0": ("vit_small_patch16", "0.01"),
    "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1": ("vit_base_patch32", "0.01"),
    "B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1": ("vit_base_patch16", "0.01"),
}
# The paper's own releases (Dosovitskiy et al., 2020). Google zeroed the 21k heads of the
# imagenet21k files; they also hold a pre_logits layer, which the official fine-tuning code
# drops and timm's copies lack: the entries describe the model without both, the same from
# either source (load the .npz by path to keep its pre_logits).
_ORIGINAL = {
    "vit_base_patch16_224.orig_in21k": "imagenet21k/ViT-B_16",
    "vit_base_patch32_224.orig_in21k": "imagenet21k/ViT-B_32",
    "vit_large_patch16_224.orig_in21k": "imagenet21k/ViT-L_16",
    "vit_large_patch32_224.orig_in21k": "imagenet21k/ViT-L_32",
    "vit_huge_patch14_224.orig_in21k": "imagenet21k/ViT-H_14",
    "vit_base_r50_s16_224.orig_in21k": "imagenet21k/R50+ViT-B_16",
    "vit_base_patch16_224.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_16-224",
    "vit_base_patch16_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_16",
    "vit_large_patch32_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_32",
    "vit_base_r50_s16_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/R50+ViT-B_16",
    # Not in timm (its names of these architectures are AugReg weights): Google's bucket only.
    "vit_base_patch32_384.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_32",
    "vit_large_patch16_224.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_16-224",
    "vit_large_patch16_384.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_16",
}
# Sharpness-aware minimisation on ImageNet-1k (Chen et al., 2021).
_SAM = {
    "vit_base_patch16_224.sam_in1k": "sam/ViT-B_16",
    "vit_base_patch32_224.sam_in1k": "sam/ViT-B_32",
}
# Weights published on timm's hub only (the originals are pickled .pth files, never read).
_TIMM_ONLY = {
    # name: (classes, (mean, std) of the input, description)
    "deit_tiny_distilled_patch16_224.fb_in1k": (1000, IMAGENET, "DeiT distilled, ImageNet-1k"),
    "deit_small_distilled_patch16_224.fb_in1k": (1000, IMAGENET, "DeiT distilled, ImageNet-1k"),
    "deit_base_distilled_patch16_224.fb_in1k": (1000, IMAGENET, "DeiT distilled, ImageNet-1k"),
    "deit3_small_patch16_224.fb_in1k": (1000, IMAGENET, "DeiT-3, ImageNet-1k"),
    "deit3_base_patch16_224.fb_in1k": (1000, IMAGENET, "DeiT-3, ImageNet-1k"),
    "deit3_small_patch16_224.fb_in22k_ft_in1k": (1000, IMAGENET, "DeiT-3, 22k -> 1k"),
    "deit3_base_patch16_224.fb_in22k_ft_in1k": (1000, IMAGENET, "DeiT-3, 22k -> 1k"),
    "vit_small_patch14_dinov2.lvd142m": (0, IMAGENET, "DINOv2 features (LVD-142M)"),
    "vit_base_patch14_dinov2.lvd142m": (0, IMAGENET, "DINOv2 features (LVD-142M)"),
    "vit_large_patch14_dinov2.lvd142m": (0, IMAGENET, "DINOv2 features (LVD-142M)"),
    "vit_small_patch14_reg4_dinov2.lvd142m": (0, IMAGENET, "DINOv2 + 4 registers"),
    "vit_base_patch14_reg4_dinov2.lvd142m": (0, IMAGENET, "DINOv2 + 4 registers"),
    "vit_large_patch14_reg4_dinov2.lvd142m": (0, IMAGENET, "DINOv2 + 4 registers"),
}
# SigLIP image towers (big_vision, Google-trained): timm's copy first (the image tower
# alone), then big_vision's two-tower file (the image tower is read, the text tower ignored).
_SIGLIP = {
    "vit_base_patch16_siglip_224.webli": ("siglip/webli_en_b16_224_63724782", "SigLIP, WebLI"),
    "vit_base_patch16_siglip_224.v2_webli": ("siglip2/siglip2_b16_224", "SigLIP 2, WebLI"),
}


def _url(base, path):
    """``base + path`` with every reserved character of ``path`` quoted (``+`` -> ``%2B``)."""
    return base + urllib.parse.quote(path)


def _hub(name):
    return Source(TIMM_HUB.format(name=urllib.parse.quote(name)), "timm")


def _entry(name, sources, num_classes, trained, description, normalisation=INCEPTION):
    """``name``'s entry: its architecture's variant, resolution and options, plus ``trained``."""
    arch = ARCHITECTURES[name.partition(".")[0]]
    options = types.MappingProxyType({**arch.options, **trained})
    return WeightsEntry(
        arch.variant,
        sources,
        num_classes,
        arch.resolution,
        None,
        options,
        *normalisation,
        description,
    )


def _google(name, path, num_classes, description):
    """Google's file ``vit_models/<path>.npz``, then timm's hub copy (unless tagged google_)."""
    sources = (Source(_url(GOOGLE, path + ".npz"), "official"),)
    if ".google_" not in name:
        sources += (_hub(name),)
    return _entry(name, sources, num_classes, GOOGLE_TRAINED, description)


def _registry():
    entries = {}
    for pretrain, (stem, finetunes) in _AUGREG.items():
        for res, lr in finetunes.items():
            name = f"{stem}_{res}.augreg_in21k_ft_in1k"
            path = "augreg/" + pretrain + _AUGREG_FT.format(lr=lr, res=res)
            entries[name] = _google(name, path, 1000, "AugReg, 21k -> 1k")
    for pretrain in _AUGREG_IN21K:
        name = f"{_AUGREG[pretrain][0]}_224.augreg_in21k"
        entries[name] = _google(name, "augreg/" + pretrain, IN21K_CLASSES, "AugReg, 21k")
    for pretrain, (stem, lr) in _AUGREG_IN1K.items():
        for res in (224, 384):
            name = f"{stem}_{res}.augreg_in1k"
            path = "augreg/" + pretrain + _AUGREG_FT.format(lr=lr, res=res)
            entries[name] = _google(name, path, 1000, "AugReg, ImageNet-1k only")
    for name, path in _ORIGINAL.items():
        if name.endswith(".orig_in21k"):
            entries[name] = _google(name, path, 0, "original ViT, 21k (head zeroed by Google)")
        else:
            entries[name] = _google(name, path, 1000, "original ViT, 21k -> 1k")
    for name, path in _SAM.items():
        entries[name] = _google(name, path, 1000, "SAM optimiser, ImageNet-1k")
    for name, (num_classes, normalisation, description) in _TIMM_ONLY.items():
        entries[name] = _entry(
            name, (_hub(name),), num_classes, TORCH_TRAINED, description, normalisation
        )
    for name, (path, description) in _SIGLIP.items():
        sources = (_hub(name), Source(_url(BIG_VISION, path + ".npz"), "official"))
        entries[name] = _entry(name, sources, 0, GOOGLE_TRAINED, description)
    return dict(sorted(entries.items()))


#: Registry name -> ``WeightsEntry``.
REGISTRY = _registry()


def get_entry(name):
    """The ``WeightsEntry`` of a registry name (a ``#sha256=`` pin is ignored).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    base, _ = split_pin(name)
    if base not in REGISTRY:
        raise ValueError(
            f"Unknown weights {name!r}: not a file and not a known checkpoint "
            "name. Known names:\n  " + "\n  ".join(REGISTRY)
        )
    return REGISTRY[base]


def cached_path(name, source, directory=None):
    """Where ``source`` of registry entry ``name`` is cached: ``<cache>/<name><suffix>``."""
    return os.path.join(directory or cache_dir(), name + source.suffix)


def fetch(name, sha256=None, progress=True, policy=None, directory=None):
    """Local path of a registry checkpoint, downloading it once.

    A cached copy from any source is used first (checked against its recorded
    digest, or the pin); otherwise the sources are tried in order, and the
    first that downloads (and matches the pin) wins.

    Args:
        name: str. A key of ``REGISTRY``, optionally with ``#sha256=<hex>``.
        sha256: str or None. Pinned SHA-256 of the file (whichever source
            gives it); a source whose file differs is skipped.
        progress: bool. Show a progress bar.
        policy: ``keras_vit.weights.downloads.DownloadPolicy`` or None.
        directory: str or None. Cache folder (default ``$KERAS_VIT_CACHE``).

    Returns:
        str. The cached ``.npz`` or ``.safetensors`` file.

    Raises:
        ValueError: for an unknown name or a malformed pin; if every source
            gave a file that does not match the pin.
        DownloadError: (an ``OSError``) if no source could be downloaded; the
            message lists every URL tried and why it failed.
    """
    entry = get_entry(name)
    name, pinned = split_pin(name)
    sha256 = checked_digest(sha256) if sha256 is not None else pinned
    directory = directory or cache_dir()
    for source in entry.sources:
        path = cached_file(cached_path(name, source, directory), sha256)
        if path is not None:
            return path
    prepare_cache(directory)  # before any download, so a bad cache fails first
    failures = []
    for source in entry.sources:
        try:
            return download(source.url, sha256, name + source.suffix, directory, progress, policy)
        except (DownloadError, ValueError) as err:
            failures.append(err)
            if source is not entry.sources[-1]:
                logger.info("%s; trying the next source.", err)
    reasons = "; ".join(str(err) for err in failures)
    if all(isinstance(err, ValueError) for err in failures):
        raise ValueError(f"No source of {name} matches the pinned sha256: {reasons}")
    raise DownloadError(name, f"every source failed: {reasons}")


def describe_options(options):
    """The options that differ from the original ViT's, as short text (``"MAP head, no cls"``)."""
    parts = []
    if options.get("class_token") is False:
        parts.append("no class token")
    if options.get("distillation_token"):
        parts.append("distillation token")
    if options.get("num_register_tokens"):
        parts.append(f"{options['num_register_tokens']} registers")
    if options.get("posemb", "learn") != "learn":
        parts.append(f"posemb {options['posemb']}")
    if options.get("layer_scale_init") is not None:
        parts.append("LayerScale")
    if options.get("classifier", "token") != "token":
        parts.append(f"{options['classifier']} pooling")
    if options.get("fc_norm"):
        parts.append("fc_norm")
    parts.append(f"{options.get('semantics', 'timm')} numerics")
    return ", ".join(parts)


def registry_table():
    """The registry as a Markdown table (the README's), one row per entry.

    Returns:
        str. Columns: name, variant, resolution, classes, options, sources.
    """
    rows = [
        "| name | variant | resolution | classes | weights | options | sources |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in REGISTRY.items():
        hosts = ", ".join(f"[{source.host}]({source.url})" for source in entry.sources)
        rows.append(
            f"| `{name}` | {entry.variant} | {entry.resolution} | "
            f"{entry.num_classes or 'none'} | {entry.description} | "
            f"{describe_options(entry.options)} | {hosts} |"
        )
    return "\n".join(rows) + "\n"
