"""The variant factories: ``keras_vit.ViT_B16(...)`` is ``ViT.from_variant("B/16", ...)``.

One line per row of ``keras_vit.model.variants.VARIANTS`` (a test checks that
they agree), written out so that grep, an IDE and a type checker find them.
"""

from __future__ import annotations

from keras_vit.model import variants
from keras_vit.model.vit import ViT


def variant_factory(variant):
    """The factory function of one variant: keyword arguments of ``ViT.from_variant``."""
    size, patch, resnet_layers = variants.VARIANTS[variant]
    stem = "" if resnet_layers is None else f"hybrid, ResNet stages {resnet_layers}, "

    def factory(**kwargs):
        return ViT.from_variant(variant, **kwargs)

    factory.__name__ = factory.__qualname__ = variants.factory_name(variant)
    factory.variant = variant
    factory.__doc__ = (
        f"Builds ViT-{variant} ({stem}transformer size {size}, patch {patch}).\n\n"
        "Keyword arguments as ``keras_vit.ViT.from_variant``: ``weights``, "
        "``include_top``, ``input_shape``/``image_size``, ``num_classes``/"
        "``classes``, ``classifier_activation`` and overrides of any ``ViT`` "
        "argument. Returns a built ``ViT``."
    )
    return factory


def build_variant(variant, **kwargs):
    """``ViT.from_variant(variant, **kwargs)``: a variant by its string, ``"B/16"``."""
    return ViT.from_variant(variant, **kwargs)


ViT_Ti16 = variant_factory("Ti/16")
ViT_S16 = variant_factory("S/16")
ViT_S14 = variant_factory("S/14")
ViT_S32 = variant_factory("S/32")
ViT_B8 = variant_factory("B/8")
ViT_B14 = variant_factory("B/14")
ViT_B16 = variant_factory("B/16")
ViT_B32 = variant_factory("B/32")
ViT_L14 = variant_factory("L/14")
ViT_L16 = variant_factory("L/16")
ViT_L32 = variant_factory("L/32")
ViT_H14 = variant_factory("H/14")
R_ViT_Ti16 = variant_factory("R+Ti/16")
R26_ViT_S32 = variant_factory("R26+S/32")
R26_ViT_B32 = variant_factory("R26+B/32")
R50_ViT_B16 = variant_factory("R50+B/16")
R50_ViT_L32 = variant_factory("R50+L/32")

#: Factory name -> factory, in the order of the variant table.
FACTORIES = {
    factory.__name__: factory
    for factory in (
        ViT_Ti16,
        ViT_S16,
        ViT_S14,
        ViT_S32,
        ViT_B8,
        ViT_B14,
        ViT_B16,
        ViT_B32,
        ViT_L14,
        ViT_L16,
        ViT_L32,
        ViT_H14,
        R_ViT_Ti16,
        R26_ViT_S32,
        R26_ViT_B32,
        R50_ViT_B16,
        R50_ViT_L32,
    )
}
