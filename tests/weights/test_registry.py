"""The registry: names, files and options checked against timm and the official listings;
several sources per entry, tried in order, through local servers and file:// URLs only."""

import hashlib
import inspect
import os
import urllib.parse
from pathlib import Path

import pytest
from loopback_http import Reply, serve

import keras_vit
from keras_vit.weights import registry
from keras_vit.weights.downloads import DownloadError, DownloadPolicy
from keras_vit.weights.registry import Source, WeightsEntry

FAST = DownloadPolicy(connect_timeout=2, read_timeout=2, retries=0, backoff=0)


def timm_default_cfgs():
    """name -> Google file (or None), from the copy of timm's default_cfgs beside this file."""
    rows = Path(__file__).with_name("timm_default_cfgs.tsv").read_text().splitlines()
    pairs = (row.split("\t") for row in rows if row and not row.startswith("#"))
    return {name: None if path == "-" else path for name, path in pairs}


# The official listings (google-research/vision_transformer README: model file names are
# vit_jax/configs/models.py's model_name; "-224" marks the 224 fine-tunes).
OFFICIAL_FILES = {
    "vit_base_patch16_224.orig_in21k": "imagenet21k/ViT-B_16.npz",
    "vit_base_patch32_224.orig_in21k": "imagenet21k/ViT-B_32.npz",
    "vit_large_patch16_224.orig_in21k": "imagenet21k/ViT-L_16.npz",
    "vit_large_patch32_224.orig_in21k": "imagenet21k/ViT-L_32.npz",
    "vit_huge_patch14_224.orig_in21k": "imagenet21k/ViT-H_14.npz",
    "vit_base_r50_s16_224.orig_in21k": "imagenet21k/R50+ViT-B_16.npz",
    "vit_base_patch16_224.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_16-224.npz",
    "vit_base_patch16_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_16.npz",
    "vit_large_patch32_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_32.npz",
    "vit_base_r50_s16_384.orig_in21k_ft_in1k": "imagenet21k+imagenet2012/R50+ViT-B_16.npz",
    "vit_base_patch32_384.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-B_32.npz",
    "vit_large_patch16_224.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_16-224.npz",
    "vit_large_patch16_384.google_orig_in21k_ft_in1k": "imagenet21k+imagenet2012/ViT-L_16.npz",
}

# What issue 14 asks the registry to hold (besides what it had).
REQUIRED = (
    "vit_base_patch8_224.augreg_in21k",
    "vit_base_patch8_224.augreg_in21k_ft_in1k",
    "vit_large_r50_s32_224.augreg_in21k",
    "vit_large_r50_s32_224.augreg_in21k_ft_in1k",
    "vit_large_r50_s32_384.augreg_in21k_ft_in1k",
    "vit_tiny_r_s16_p8_224.augreg_in21k",
    "vit_small_r26_s32_224.augreg_in21k",
    "vit_base_patch16_224.sam_in1k",
    "vit_base_patch32_224.sam_in1k",
    "vit_small_patch16_224.augreg_in1k",
    "vit_base_patch16_224.augreg_in1k",
    "deit_tiny_distilled_patch16_224.fb_in1k",
    "deit_small_distilled_patch16_224.fb_in1k",
    "deit_base_distilled_patch16_224.fb_in1k",
    "deit3_small_patch16_224.fb_in1k",
    "deit3_base_patch16_224.fb_in1k",
    "vit_small_patch14_dinov2.lvd142m",
    "vit_base_patch14_dinov2.lvd142m",
    "vit_small_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch16_siglip_224.webli",
)


def google_path(entry):
    google = [s for s in entry.sources if s.url.startswith(registry.GOOGLE)]
    return urllib.parse.unquote(google[0].url[len(registry.GOOGLE) :]) if google else None


def test_every_url_is_well_formed():
    for name, entry in registry.REGISTRY.items():
        assert entry.sources, name
        for source in entry.sources:
            url = urllib.parse.urlsplit(source.url)
            assert url.scheme == "https" and url.netloc in (
                "storage.googleapis.com",
                "huggingface.co",
            ), source.url
            assert not url.query and not url.fragment, source.url
            assert "+" not in source.url and " " not in source.url, source.url
            assert urllib.parse.quote(urllib.parse.unquote(url.path)) == url.path, source.url
            assert url.path.endswith(registry.FORMAT_SUFFIXES[source.format]), source.url
            if url.netloc == "huggingface.co":
                assert url.path == f"/timm/{name}/resolve/main/model.safetensors"
                assert source.format == "timm"
        assert len({s.url for s in entry.sources}) == len(entry.sources), name


def test_names_parse_as_architecture_and_tag():
    for name, entry in registry.REGISTRY.items():
        arch, dot, tag = name.partition(".")
        assert dot and tag and "." not in tag, name
        assert arch in registry.ARCHITECTURES, name
        assert entry.variant == registry.ARCHITECTURES[arch].variant, name
        assert entry.resolution == registry.ARCHITECTURES[arch].resolution, name
    for arch, spec in registry.ARCHITECTURES.items():
        assert spec.variant in keras_vit.VARIANTS, arch
        assert str(spec.resolution) in arch or arch.endswith("_dinov2"), arch


def test_names_are_timms_unless_marked_google():
    timm = timm_default_cfgs()
    for name, entry in registry.REGISTRY.items():
        hub = [s for s in entry.sources if s.format == "timm"]
        if ".google_" in name:
            assert name not in timm and not hub, name
            assert google_path(entry) == OFFICIAL_FILES[name], name
            continue
        assert name in timm, f"{name} is not a timm name: tag it google_"
        assert len(hub) == 1, name  # timm's hub copy
        if timm[name] is not None:
            assert google_path(entry) == timm[name], name
    for name, path in OFFICIAL_FILES.items():
        assert google_path(registry.REGISTRY[name]) == path, name
    assert set(REQUIRED) <= set(registry.REGISTRY)


def test_the_384_fine_tunes_start_from_their_own_pre_training():
    # The files issue 14 names; they differ from the 224 fine-tunes' pre-training.
    assert google_path(registry.REGISTRY["vit_base_patch32_384.augreg_in21k_ft_in1k"]) == (
        "augreg/B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz"
    )
    assert google_path(registry.REGISTRY["vit_small_r26_s32_384.augreg_in21k_ft_in1k"]) == (
        "augreg/R26_S_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz"
    )


def test_classes_and_heads():
    for name, entry in registry.REGISTRY.items():
        tag = name.partition(".")[2]
        if tag.endswith("in21k") and tag.startswith("augreg"):
            assert entry.num_classes == registry.IN21K_CLASSES, name
        elif tag == "orig_in21k" or "dinov2" in name or "siglip" in name:
            assert entry.num_classes == 0, name  # zeroed head / feature extractors
        else:
            assert entry.num_classes == 1000, name
        assert entry.representation_size is None, name


# timm's model definitions (keyword arguments of the VisionTransformer they build).
TIMM_MODEL_ARGS = {
    "vit_base_patch16_224": {},
    "deit_base_distilled_patch16_224": dict(distilled=True),
    "deit3_base_patch16_224": dict(no_embed_class=True, init_values=1e-6),
    "vit_base_patch14_dinov2": dict(init_values=1e-5),
    "vit_base_patch14_reg4_dinov2": dict(init_values=1e-5, reg_tokens=4, no_embed_class=True),
    "vit_base_patch16_siglip_224": dict(class_token=False, global_pool="map"),
    "vit_base_patch16_reg4_gap_256": dict(
        class_token=False, no_embed_class=True, global_pool="avg", reg_tokens=4
    ),
}


def options_from_timm(args):
    """keras-vit's options for timm's VisionTransformer arguments (defaults as in timm)."""
    class_token = args.get("class_token", True)
    prefix = class_token or args.get("reg_tokens", 0) > 0
    pool = args.get("global_pool", "token")
    return dict(
        class_token=class_token,
        distillation_token=args.get("distilled", False),
        num_register_tokens=args.get("reg_tokens", 0),
        posemb="learn_grid" if args.get("no_embed_class") or not prefix else "learn",
        layer_scale_init=args.get("init_values"),
        classifier={"token": "token", "avg": "gap", "map": "map"}[pool],
        fc_norm=pool == "avg",
    )


def test_structural_options_follow_timms_model_definitions():
    for arch, args in TIMM_MODEL_ARGS.items():
        options = dict(registry.ARCHITECTURES[arch].options)
        assert options == options_from_timm(args), arch


def test_every_entry_carries_every_option_and_valid_values():
    for name, entry in registry.REGISTRY.items():
        assert set(entry.options) == set(registry.OPTION_NAMES), name
        registry.check_options(entry.options)
        arch = registry.ARCHITECTURES[name.partition(".")[0]]
        for key, value in arch.options.items():
            assert entry.options[key] == value, (name, key)
        google_trained = any(s.url.startswith(registry.GOOGLE) for s in entry.sources) or (
            "siglip" in name
        )
        expected = registry.GOOGLE_TRAINED if google_trained else registry.TORCH_TRAINED
        # The numerics follow who trained the weights, not the source downloaded.
        assert {k: entry.options[k] for k in expected} == expected, name
        # timm's cfgs: ImageNet mean/std for DeiT and DINOv2, 0.5/0.5 ([-1, 1]) otherwise.
        pytorch_trained = name.startswith("deit") or "dinov2" in name
        normalisation = registry.IMAGENET if pytorch_trained else registry.INCEPTION
        assert (entry.mean, entry.std) == normalisation, name


def test_option_choices_are_the_models():
    from keras_vit.model import posemb, vit

    assert set(registry.SEMANTICS) == set(vit.SEMANTICS)
    assert registry.POSEMB_INTERPOLATIONS == posemb.POSEMB_INTERPOLATIONS
    assert set(vit.CLASSIFIERS) <= set(registry.CLASSIFIERS)


_VIT_PARAMETERS = set(inspect.signature(keras_vit.ViT.__init__).parameters)


def test_options_are_vit_arguments_by_name():
    assert set(registry.OPTION_NAMES) <= _VIT_PARAMETERS


# timm 1.0.31's parameter counts (issue 14): architecture -> (classes, count).
TIMM_PARAMETER_COUNTS = {
    "deit_tiny_distilled_patch16_224": (1000, 5_910_800),
    "deit_small_distilled_patch16_224": (1000, 22_436_432),
    "deit_base_distilled_patch16_224": (1000, 87_338_192),
    "deit3_small_patch16_224": (1000, 22_059_496),
    "deit3_base_patch16_224": (1000, 86_585_320),
    "vit_small_patch14_dinov2": (0, 22_056_192),
    "vit_small_patch14_reg4_dinov2": (0, 22_057_344),
    "vit_base_patch14_reg4_dinov2": (0, 86_582_016),
    "vit_base_patch16_siglip_224": (0, 92_884_224),
    "vit_base_patch16_reg4_gap_256": (1000, 86_615_272),
}


@pytest.mark.parametrize("arch", TIMM_PARAMETER_COUNTS)
def test_the_options_give_timms_parameter_count(arch):
    from keras_vit.model.variants import count_parameters

    classes, expected = TIMM_PARAMETER_COUNTS[arch]
    spec = registry.ARCHITECTURES[arch]
    entries = [e for n, e in registry.REGISTRY.items() if n.startswith(arch + ".")]
    assert all(entry.num_classes == classes for entry in entries), arch
    structural = {
        key: value
        for key, value in spec.options.items()
        if key not in ("semantics", "posemb_interpolation")
    }
    count = count_parameters(
        spec.variant, spec.resolution, max(classes, 1), include_top=classes > 0, **structural
    )
    assert count == expected


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(registers=4), "Unknown ViT options \\['registers'\\]; expected some of"),
        (dict(posemb="learned"), "posemb must be one of .*'learn_grid'.*got 'learned'"),
        (dict(classifier="cls"), "classifier must be one of .*got 'cls'"),
        (dict(semantics="exact"), "semantics must be one of .*got 'exact'"),
        (dict(num_register_tokens=-1), "num_register_tokens must be >= 0, got -1"),
        (dict(num_register_tokens=2.0), "num_register_tokens must be an int, got 2.0"),
        (dict(layer_scale_init=0.0), "layer_scale_init must be > 0, got 0.0"),
        (dict(class_token="yes"), "class_token must be a bool or None, got 'yes'"),
        (dict(fc_norm=1), "fc_norm must be a bool, got 1"),
        (dict(posemb_interpolation="cubic"), "posemb_interpolation must be one of .*'cubic'"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        registry.check_options(options)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=()), "at least one source"),
        (dict(num_classes=-1), "num_classes must be >= 0, got -1"),
        (dict(resolution=0), "resolution must be >= 1, got 0"),
        (dict(options={"posemb": "x"}), "posemb must be one of"),
    ],
)
def test_bad_entries_are_refused(kwargs, message):
    values = dict(
        variant="B/16",
        sources=(Source("file:///x.npz", "official"),),
        num_classes=10,
        resolution=32,
    )
    with pytest.raises(ValueError, match=message):
        WeightsEntry(**{**values, **kwargs})


def test_a_source_format_must_be_known():
    with pytest.raises(
        ValueError, match="format must be one of \\('official', 'timm'\\), got 'pt'"
    ):
        Source("https://example.invalid/x.pth", "pt")


def test_the_table_lists_every_entry_once():
    table = registry.registry_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(registry.REGISTRY)
    names = [row.split("`")[1] for row in rows]
    assert names == list(registry.REGISTRY)
    for row, entry in zip(rows, registry.REGISTRY.values()):
        for source in entry.sources:
            assert f"({source.url})" in row


# --- fetching: sources tried in order --------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("KERAS_VIT_CACHE", str(folder))
    return folder


def served_file(tmp_path, name, size=4096):
    path = tmp_path / "served" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def register(monkeypatch, *sources):
    entry = WeightsEntry("B/16", tuple(sources), num_classes=10, resolution=32)
    monkeypatch.setitem(registry.REGISTRY, "vit_test_patch16_32.fixture", entry)
    return "vit_test_patch16_32.fixture"


def test_fetch_falls_back_to_the_next_source(cache, tmp_path, monkeypatch):
    timm_copy, digest = served_file(tmp_path, "model.safetensors")
    name = register(
        monkeypatch,
        Source((tmp_path / "gone.npz").as_uri(), "official"),
        Source(timm_copy.as_uri(), "timm"),
    )
    path = registry.fetch(name, progress=False, policy=FAST)
    assert path == str(cache / f"{name}.safetensors")  # the suffix of the source's format
    assert Path(path).read_bytes() == timm_copy.read_bytes()
    assert Path(path + ".sha256").read_text().strip() == digest
    assert sorted(os.listdir(cache)) == [f"{name}.safetensors", f"{name}.safetensors.sha256"]


def test_fetch_falls_back_after_an_http_error(cache, tmp_path, monkeypatch):
    body = os.urandom(2048)
    routes = {
        "/google/b16.npz": [Reply(403, b"denied")],
        "/hub/model.safetensors": [Reply(200, body)],
    }
    with serve(routes) as (base, hits):
        name = register(
            monkeypatch,
            Source(f"{base}/google/b16.npz", "official"),
            Source(f"{base}/hub/model.safetensors", "timm"),
        )
        path = registry.fetch(name, progress=False, policy=FAST)
    assert Path(path).read_bytes() == body and path.endswith(".safetensors")
    assert hits == {"/google/b16.npz": 1, "/hub/model.safetensors": 1}  # 403: not retried


def test_a_cached_copy_of_any_source_is_used_before_any_download(cache, tmp_path, monkeypatch):
    body = os.urandom(1024)
    timm_copy, _ = served_file(tmp_path, "model.safetensors")
    with serve({"/b16.npz": [Reply(503), Reply(200, body)]}) as (base, hits):
        name = register(
            monkeypatch, Source(f"{base}/b16.npz", "official"), Source(timm_copy.as_uri(), "timm")
        )
        fallback = registry.fetch(name, progress=False, policy=FAST)  # 503 -> the timm copy
        assert registry.fetch(name, progress=False, policy=FAST) == fallback
        assert hits["/b16.npz"] == 1  # the cached timm copy was used: no request
        with open(fallback, "r+b") as file:  # a damaged cache entry is not trusted
            file.write(b"garbage")
        timm_copy.unlink()
        again = registry.fetch(name, progress=False, policy=FAST)
    assert again == str(cache / f"{name}.npz") and Path(again).read_bytes() == body
    assert hits["/b16.npz"] == 2


def test_a_pinned_digest_picks_the_source_that_serves_it(cache, tmp_path, monkeypatch):
    google_copy, _ = served_file(tmp_path, "b16.npz")
    timm_copy, digest = served_file(tmp_path, "model.safetensors")
    name = register(
        monkeypatch, Source(google_copy.as_uri(), "official"), Source(timm_copy.as_uri(), "timm")
    )
    path = registry.fetch(f"{name}#sha256={digest.upper()}", progress=False, policy=FAST)
    assert path.endswith(".safetensors") and not (cache / f"{name}.npz").exists()
    assert registry.fetch(name, sha256=digest, progress=False, policy=FAST) == path


def test_a_pin_no_source_matches_is_a_value_error_and_leaves_nothing(cache, tmp_path, monkeypatch):
    google_copy, _ = served_file(tmp_path, "b16.npz")
    name = register(monkeypatch, Source(google_copy.as_uri(), "official"))
    with pytest.raises(
        ValueError,
        match=f"No source of {name} matches the pinned sha256.*expected sha256 {'a' * 64}",
    ):
        registry.fetch(name, sha256="a" * 64, progress=False, policy=FAST)
    assert os.listdir(cache) == []


@pytest.mark.parametrize("pin", ["abc", "g" * 64, "a" * 63])
def test_a_malformed_pin_is_refused_before_any_download(cache, tmp_path, monkeypatch, pin):
    name = register(monkeypatch, Source((tmp_path / "never.npz").as_uri(), "official"))
    with pytest.raises(ValueError, match=f"64 hexadecimal digits, got '{pin}'"):
        registry.fetch(f"{name}#sha256={pin}", progress=False)


def test_when_every_source_fails_the_error_names_each_url(cache, tmp_path, monkeypatch):
    with serve({"/b16.npz": [Reply(404)]}) as (base, _):
        first, second = f"{base}/b16.npz", (tmp_path / "gone.safetensors").as_uri()
        name = register(monkeypatch, Source(first, "official"), Source(second, "timm"))
        with pytest.raises(DownloadError) as caught:
            registry.fetch(name, progress=False, policy=FAST)
    message = str(caught.value)
    assert message.startswith(f"Could not download {name}: every source failed: ")
    assert f"{first}: HTTP 404" in message and f"{second}: " in message
    assert "\n" not in message  # one line for the CLI
    assert os.listdir(cache) == []


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="(?s)Unknown weights 'vit_nope.x'.*vit_base_patch16_224"):
        registry.fetch("vit_nope.x")


def test_the_readme_table_lists_every_entry_with_its_variant_and_resolution():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        if len(cells) == 7 and cells[0].startswith("`") and name in registry.REGISTRY:
            rows[name] = cells
    assert sorted(rows) == sorted(registry.REGISTRY)
    for name, cells in rows.items():
        entry = registry.REGISTRY[name]
        assert cells[1] == entry.variant, name
        assert int(cells[2]) == entry.resolution, name
        assert cells[3] == (str(entry.num_classes) if entry.num_classes else "none"), name
        for source in entry.sources:
            assert f"({source.url})" in cells[6], (name, source.url)
