"""Tensor-name mapping tables: one per checkpoint format, as data.

Each table maps a Keras variable path of a ``ViT`` (relative to the model,
e.g. ``encoderblock_0/MlpBlock_3/Dense_0/kernel``) to a checkpoint tensor
name, with the layout transform between the two. ``{i}`` is a transformer
block index (0-based in both), ``{s}``/``{u}`` a ResNet stage/unit (1-based
in Keras and official names; ``{s0}``/``{u0}`` is the 0-based spelling timm
uses). A rule with ``split=(k, n)`` reads part ``k`` of ``n`` equal parts of a
fused source tensor along its first axis (timm's ``qkv``).

Transforms (Keras layout <- checkpoint layout):

============  ===============================================================
``copy``      same layout
``vector``    same values, any singleton axes dropped (old GroupNorm params
              stored as ``(1, 1, 1, C)``)
``linear``    PyTorch ``Linear`` weight ``(out, in)`` -> ``(in, out)``
``conv``      PyTorch conv weight ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``
``heads_in``  ``(heads * head_dim, in)`` -> ``(in, heads, head_dim)``
``heads_bias`` ``(heads * head_dim,)`` -> ``(heads, head_dim)``
``heads_out`` ``(out, heads * head_dim)`` -> ``(heads, head_dim, out)``
============  ===============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_ATTN = "encoderblock_{i}/MultiHeadDotProductAttention_1"
_MLP = "encoderblock_{i}/MlpBlock_3"
_UNIT = "resnet/block{s}/unit{u}"
_MAP = "MAPHead_0"
_MAP_ATTN = f"{_MAP}/MultiHeadDotProductAttention_0"


@dataclass(frozen=True)
class Rule:
    """One Keras variable <-> one checkpoint tensor (or a part of one).

    Args:
        keras: str. Keras path template relative to the model.
        source: str. Checkpoint name template.
        transform: str. Name of the layout transform (module docstring).
        split: optional ``(index, parts)`` of a fused source tensor.
    """

    keras: str
    source: str
    transform: str = "copy"
    split: tuple | None = None


def _official_rules():
    """vit_jax / AugReg layout (pre-linen names), the fixtures' ``official.npz``."""
    rules = [
        Rule("embedding/kernel", "embedding/kernel"),
        Rule("embedding/bias", "embedding/bias"),
        Rule("cls/cls", "cls"),
        Rule("posembed_input/pos_embedding", "Transformer/posembed_input/pos_embedding"),
        Rule("encoder_norm/gamma", "Transformer/encoder_norm/scale"),
        Rule("encoder_norm/beta", "Transformer/encoder_norm/bias"),
        Rule("pre_logits/kernel", "pre_logits/kernel"),
        Rule("pre_logits/bias", "pre_logits/bias"),
        Rule("head/kernel", "head/kernel"),
        Rule("head/bias", "head/bias"),
    ]
    block = "Transformer/encoderblock_{i}"
    for norm in ("LayerNorm_0", "LayerNorm_2"):
        rules += [
            Rule(f"encoderblock_{{i}}/{norm}/gamma", f"{block}/{norm}/scale"),
            Rule(f"encoderblock_{{i}}/{norm}/beta", f"{block}/{norm}/bias"),
        ]
    for name in ("query", "key", "value", "out"):
        for part in ("kernel", "bias"):
            rules.append(
                Rule(
                    f"{_ATTN}/{name}_{part}",
                    f"{block}/MultiHeadDotProductAttention_1/{name}/{part}",
                )
            )
    for dense in ("Dense_0", "Dense_1"):
        for part in ("kernel", "bias"):
            rules.append(Rule(f"{_MLP}/{dense}/{part}", f"{block}/MlpBlock_3/{dense}/{part}"))
    # big_vision's MAP head (SigLIP image towers), stored under its own names.
    rules += [
        Rule(f"{_MAP}/probe", f"{_MAP}/probe"),
        Rule(f"{_MAP}/LayerNorm_0/gamma", f"{_MAP}/LayerNorm_0/scale"),
        Rule(f"{_MAP}/LayerNorm_0/beta", f"{_MAP}/LayerNorm_0/bias"),
    ]
    for name in ("query", "key", "value", "out"):
        for part in ("kernel", "bias"):
            rules.append(Rule(f"{_MAP_ATTN}/{name}_{part}", f"{_MAP_ATTN}/{name}/{part}"))
    for dense in ("Dense_0", "Dense_1"):
        for part in ("kernel", "bias"):
            rules.append(
                Rule(f"{_MAP}/MlpBlock_0/{dense}/{part}", f"{_MAP}/MlpBlock_0/{dense}/{part}")
            )
    rules += [
        Rule("resnet/conv_root/kernel", "conv_root/kernel"),
        Rule("resnet/gn_root/gamma", "gn_root/scale", "vector"),
        Rule("resnet/gn_root/beta", "gn_root/bias", "vector"),
    ]
    for conv, norm in (
        ("conv1", "gn1"),
        ("conv2", "gn2"),
        ("conv3", "gn3"),
        ("conv_proj", "gn_proj"),
    ):
        rules += [
            Rule(f"{_UNIT}/{conv}/kernel", "block{s}/unit{u}/" + f"{conv}/kernel"),
            Rule(f"{_UNIT}/{norm}/gamma", "block{s}/unit{u}/" + f"{norm}/scale", "vector"),
            Rule(f"{_UNIT}/{norm}/beta", "block{s}/unit{u}/" + f"{norm}/bias", "vector"),
        ]
    return tuple(rules)


def _torch_rules(attention, blocks, norm, head, stem):
    """Rules shared by the PyTorch formats (timm and Hugging Face).

    Args:
        attention: tuple of rules for one block's attention.
        blocks: dict of block-level names: ``norm1``, ``norm2``, ``fc1``,
            ``fc2`` (templates with ``{i}``).
        norm: str. Final LayerNorm name.
        head: dict ``{"head": name, "pre_logits": name}``.
        stem: dict ``{"cls", "pos", "patch"}`` names.
    """
    rules = [
        Rule("embedding/kernel", f"{stem['patch']}.weight", "conv"),
        Rule("embedding/bias", f"{stem['patch']}.bias"),
        Rule("cls/cls", stem["cls"]),
        Rule("posembed_input/pos_embedding", stem["pos"]),
        Rule("encoder_norm/gamma", f"{norm}.weight"),
        Rule("encoder_norm/beta", f"{norm}.bias"),
        *attention,
    ]
    for keras, key in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
        rules += [
            Rule(f"encoderblock_{{i}}/{keras}/gamma", f"{blocks[key]}.weight"),
            Rule(f"encoderblock_{{i}}/{keras}/beta", f"{blocks[key]}.bias"),
        ]
    for keras, key in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        rules += [
            Rule(f"{_MLP}/{keras}/kernel", f"{blocks[key]}.weight", "linear"),
            Rule(f"{_MLP}/{keras}/bias", f"{blocks[key]}.bias"),
        ]
    for keras, name in (("head", head["head"]), ("pre_logits", head["pre_logits"])):
        rules += [
            Rule(f"{keras}/kernel", f"{name}.weight", "linear"),
            Rule(f"{keras}/bias", f"{name}.bias"),
        ]
    return rules


def _timm_rules():
    """timm ``VisionTransformer`` / hybrid state dict (``timm.safetensors``)."""
    qkv = "blocks.{i}.attn.qkv"
    attention = []
    for k, name in enumerate(("query", "key", "value")):
        attention += [
            Rule(f"{_ATTN}/{name}_kernel", f"{qkv}.weight", "heads_in", (k, 3)),
            Rule(f"{_ATTN}/{name}_bias", f"{qkv}.bias", "heads_bias", (k, 3)),
        ]
    attention += [
        Rule(f"{_ATTN}/out_kernel", "blocks.{i}.attn.proj.weight", "heads_out"),
        Rule(f"{_ATTN}/out_bias", "blocks.{i}.attn.proj.bias"),
    ]
    rules = _torch_rules(
        attention=attention,
        blocks=dict(
            norm1="blocks.{i}.norm1",
            norm2="blocks.{i}.norm2",
            fc1="blocks.{i}.mlp.fc1",
            fc2="blocks.{i}.mlp.fc2",
        ),
        norm="norm",
        head=dict(head="head", pre_logits="pre_logits.fc"),
        stem=dict(cls="cls_token", pos="pos_embed", patch="patch_embed.proj"),
    )
    rules += _timm_family_rules()
    backbone = "patch_embed.backbone"
    unit = backbone + ".stages.{s0}.blocks.{u0}"
    rules += [
        Rule("resnet/conv_root/kernel", f"{backbone}.stem.conv.weight", "conv"),
        Rule("resnet/gn_root/gamma", f"{backbone}.stem.norm.weight"),
        Rule("resnet/gn_root/beta", f"{backbone}.stem.norm.bias"),
        # A root-only stem (R+Ti/16) is timm's bare stem module, without "stem.".
        Rule("resnet/conv_root/kernel", f"{backbone}.conv.weight", "conv"),
        Rule("resnet/gn_root/gamma", f"{backbone}.norm.weight"),
        Rule("resnet/gn_root/beta", f"{backbone}.norm.bias"),
    ]
    for conv, norm, t_conv, t_norm in (
        ("conv1", "gn1", "conv1", "norm1"),
        ("conv2", "gn2", "conv2", "norm2"),
        ("conv3", "gn3", "conv3", "norm3"),
        ("conv_proj", "gn_proj", "downsample.conv", "downsample.norm"),
    ):
        rules += [
            Rule(f"{_UNIT}/{conv}/kernel", f"{unit}.{t_conv}.weight", "conv"),
            Rule(f"{_UNIT}/{norm}/gamma", f"{unit}.{t_norm}.weight"),
            Rule(f"{_UNIT}/{norm}/beta", f"{unit}.{t_norm}.bias"),
        ]
    return tuple(rules)


def _timm_family_rules():
    """timm's ViT-family tensors: DeiT, registers, LayerScale, MAP pooling, fc_norm."""
    rules = [
        Rule("dist_token/tokens", "dist_token"),
        Rule("reg_token/tokens", "reg_token"),
        Rule("head_dist/kernel", "head_dist.weight", "linear"),
        Rule("head_dist/bias", "head_dist.bias"),
        Rule("fc_norm/gamma", "fc_norm.weight"),
        Rule("fc_norm/beta", "fc_norm.bias"),
        Rule("encoderblock_{i}/ls1/gamma", "blocks.{i}.ls1.gamma"),
        Rule("encoderblock_{i}/ls2/gamma", "blocks.{i}.ls2.gamma"),
        # AttentionPoolLatent: latent = probe, q / kv / proj = the MAP attention.
        Rule(f"{_MAP}/probe", "attn_pool.latent"),
        Rule(f"{_MAP_ATTN}/query_kernel", "attn_pool.q.weight", "heads_in"),
        Rule(f"{_MAP_ATTN}/query_bias", "attn_pool.q.bias", "heads_bias"),
        Rule(f"{_MAP_ATTN}/out_kernel", "attn_pool.proj.weight", "heads_out"),
        Rule(f"{_MAP_ATTN}/out_bias", "attn_pool.proj.bias"),
        Rule(f"{_MAP}/LayerNorm_0/gamma", "attn_pool.norm.weight"),
        Rule(f"{_MAP}/LayerNorm_0/beta", "attn_pool.norm.bias"),
    ]
    for k, name in enumerate(("key", "value")):
        rules += [
            Rule(f"{_MAP_ATTN}/{name}_kernel", "attn_pool.kv.weight", "heads_in", (k, 2)),
            Rule(f"{_MAP_ATTN}/{name}_bias", "attn_pool.kv.bias", "heads_bias", (k, 2)),
        ]
    for keras, torch in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        rules += [
            Rule(f"{_MAP}/MlpBlock_0/{keras}/kernel", f"attn_pool.mlp.{torch}.weight", "linear"),
            Rule(f"{_MAP}/MlpBlock_0/{keras}/bias", f"attn_pool.mlp.{torch}.bias"),
        ]
    return rules


def _hf_rules():
    """Hugging Face ``ViTForImageClassification`` (``vit.`` prefix) names."""
    layer = "vit.encoder.layer.{i}"
    attention = []
    for name in ("query", "key", "value"):
        attention += [
            Rule(
                f"{_ATTN}/{name}_kernel", f"{layer}.attention.attention.{name}.weight", "heads_in"
            ),
            Rule(f"{_ATTN}/{name}_bias", f"{layer}.attention.attention.{name}.bias", "heads_bias"),
        ]
    attention += [
        Rule(f"{_ATTN}/out_kernel", f"{layer}.attention.output.dense.weight", "heads_out"),
        Rule(f"{_ATTN}/out_bias", f"{layer}.attention.output.dense.bias"),
    ]
    return tuple(
        _torch_rules(
            attention=attention,
            blocks=dict(
                norm1=f"{layer}.layernorm_before",
                norm2=f"{layer}.layernorm_after",
                fc1=f"{layer}.intermediate.dense",
                fc2=f"{layer}.output.dense",
            ),
            norm="vit.layernorm",
            head=dict(head="classifier", pre_logits="vit.pooler.dense"),
            stem=dict(
                cls="vit.embeddings.cls_token",
                pos="vit.embeddings.position_embeddings",
                patch="vit.embeddings.patch_embeddings.projection",
            ),
        )
    )


MAPPINGS = {
    "official": _official_rules(),
    "timm": _timm_rules(),
    "hf": _hf_rules(),
}

# big_vision / linen checkpoints name the block's modules per type; the
# official table uses the pre-linen names of the vit_jax ``.npz`` files.
LINEN_TO_PRE_LINEN = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}

# Keras variables that may be left initialised (new classes, dropped
# representation layer) instead of failing the load.
TOP_LAYERS = ("pre_logits", "head", "head_dist")

# Keras paths of the tensors whose presence tells the architecture.
POSEMB = "posembed_input/pos_embedding"
CLASS_TOKEN = "cls/cls"
PATCH_KERNEL = "embedding/kernel"


def _template_regex(template):
    pattern = re.escape(template)
    for field in ("i", "s", "u", "s0", "u0"):
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>\\d+)")
    return re.compile(pattern + r"\Z")


def _fields(match):
    fields = {k: int(v) for k, v in match.groupdict().items()}
    for name in ("s", "u"):
        if name in fields:
            fields[f"{name}0"] = fields[name] - 1
        if f"{name}0" in fields:
            fields[name] = fields[f"{name}0"] + 1
    return fields


def keras_to_source(fmt):
    """``keras path -> (source name, rule)`` resolver of a format's table."""
    compiled = [(_template_regex(rule.keras), rule) for rule in MAPPINGS[fmt]]

    def resolve(path):
        for regex, rule in compiled:
            match = regex.match(path)
            if match:
                return rule.source.format(**_fields(match)), rule
        return None, None

    return resolve


def source_to_keras(fmt):
    """``source name -> [(keras path, rule), ...]`` resolver of a format."""
    compiled = [(_template_regex(rule.source), rule) for rule in MAPPINGS[fmt]]

    def resolve(name):
        found = []
        for regex, rule in compiled:
            match = regex.match(name)
            if match:
                found.append((rule.keras.format(**_fields(match)), rule))
        return found

    return resolve


def to_keras_layout(array, rule, num_heads):
    """Converts one checkpoint tensor (or its ``rule.split`` part) to Keras layout.

    Args:
        array: NumPy array as stored in the checkpoint.
        rule: the ``Rule`` that matched it.
        num_heads: int. Attention heads (splits ``heads * head_dim`` axes).

    Raises:
        ValueError: if the tensor cannot be cut as the rule says (its shape
            is then reported by the caller).
    """
    if rule.split is not None:
        index, parts = rule.split
        if array.shape[0] % parts:
            raise ValueError(f"first axis not divisible into {parts} parts")
        array = np.split(array, parts, axis=0)[index]
    transform = rule.transform
    if transform == "copy":
        return array
    if transform == "vector":
        return array.reshape(-1) if array.ndim > 1 and max(array.shape) == array.size else array
    if transform == "linear":
        return _expect_ndim(array, 2).T
    if transform == "conv":
        return _expect_ndim(array, 4).transpose(2, 3, 1, 0)
    if transform == "heads_in":
        out, fan_in = _expect_ndim(array, 2).shape
        return array.T.reshape(fan_in, num_heads, _head_dim(out, num_heads))
    if transform == "heads_bias":
        size = _expect_ndim(array, 1).shape[0]
        return array.reshape(num_heads, _head_dim(size, num_heads))
    if transform == "heads_out":
        out, width = _expect_ndim(array, 2).shape
        return array.T.reshape(num_heads, _head_dim(width, num_heads), out)
    raise KeyError(f"unknown transform {transform!r}")


def from_keras_layout(array, rule):
    """Inverse of ``to_keras_layout`` (without the split; the writer joins parts)."""
    transform = rule.transform
    if transform in ("copy", "vector"):
        return array
    if transform == "linear":
        return array.T
    if transform == "conv":
        return array.transpose(3, 2, 0, 1)
    if transform == "heads_in":
        return array.reshape(array.shape[0], -1).T
    if transform == "heads_bias":
        return array.reshape(-1)
    if transform == "heads_out":
        return array.reshape(-1, array.shape[-1]).T
    raise KeyError(f"unknown transform {transform!r}")


def _expect_ndim(array, ndim):
    if array.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D tensor")
    return array


def _head_dim(width, num_heads):
    if width % num_heads:
        raise ValueError(f"width {width} not divisible by {num_heads} heads")
    return width // num_heads


def to_keras_tensors(checkpoint, num_heads):
    """Renames a checkpoint's tensors to Keras paths in Keras layout.

    Args:
        checkpoint: a ``keras_vit.weights.readers.Checkpoint``.
        num_heads: int. Attention heads (to split fused head axes).

    Returns:
        ``(tensors, origin, problems)``: ``{keras path: array}``,
        ``{keras path: source name}`` and a list of messages for source
        tensors that match no rule or cannot be re-laid-out.
    """
    resolve = source_to_keras(checkpoint.format)
    tensors, origin, problems = {}, {}, []
    for name, array in checkpoint.tensors.items():
        targets = resolve(name)
        if not targets:
            problems.append(f"unexpected tensor {name!r} {tuple(array.shape)}")
            continue
        for path, rule in targets:
            try:
                tensors[path] = np.asarray(to_keras_layout(array, rule, num_heads))
            except ValueError as err:
                problems.append(
                    f"mis-shaped tensor {name!r}: shape {tuple(array.shape)} "
                    f"cannot be read as {path!r} ({err})"
                )
                continue
            origin[path] = name
    return tensors, origin, problems
