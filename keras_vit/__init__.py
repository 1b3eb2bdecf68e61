"""keras-vit: the Vision Transformer for Keras 3 on TensorFlow.

    import keras_vit
    model = keras_vit.ViT_B16(num_classes=10, image_size=224)

This module is the public API; the subsystems live in ``keras_vit.model``,
``keras_vit.weights``, ``keras_vit.data``, ``keras_vit.train``,
``keras_vit.export`` and ``keras_vit.analysis``. Importing it registers every
layer with Keras, so ``.keras`` files load in safe mode.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_vit.data.images import load_image, preprocess_input  # noqa: E402
from keras_vit.export.artifacts import load_artifact  # noqa: E402
from keras_vit.export.exporter import export_model  # noqa: E402
from keras_vit.model.blocks import (  # noqa: E402
    LayerScale,
    MAPHead,
    MlpBlock,
    MultiHeadSelfAttention,
    TransformerBlock,
)
from keras_vit.model.factories import (  # noqa: E402
    FACTORIES,
    R26_ViT_B32,
    R26_ViT_S32,
    R50_ViT_B16,
    R50_ViT_L32,
    R_ViT_Ti16,
    ViT_B8,
    ViT_B14,
    ViT_B16,
    ViT_B32,
    ViT_H14,
    ViT_L14,
    ViT_L16,
    ViT_L32,
    ViT_S14,
    ViT_S16,
    ViT_S32,
    ViT_Ti16,
    build_variant,
)
from keras_vit.model.frozen import FrozenModel, freeze  # noqa: E402
from keras_vit.model.layers import (  # noqa: E402
    AddPositionEmbs,
    AddSinCosPositionEmbs,
    ClassToken,
    PatchEncoder,
    PrefixTokens,
)
from keras_vit.model.loading import load_weights  # noqa: E402
from keras_vit.model.mpp import MaskedPatchPrediction, patch_color_targets  # noqa: E402
from keras_vit.model.posemb import (  # noqa: E402
    POSEMB_INTERPOLATIONS,
    interpolation_matrix,
    resize_position_embedding,
)
from keras_vit.model.resnet import ResNetStem, StdConv2D  # noqa: E402
from keras_vit.model.variants import SIZES, VARIANTS, count_parameters  # noqa: E402
from keras_vit.model.vit import ViT  # noqa: E402

#: ``ViT.from_checkpoint``: the model a checkpoint describes, loaded.
model_from_checkpoint = ViT.from_checkpoint

__version__ = "0.1.0"
__all__ = [
    "FACTORIES",
    "POSEMB_INTERPOLATIONS",
    "SIZES",
    "VARIANTS",
    "AddPositionEmbs",
    "AddSinCosPositionEmbs",
    "ClassToken",
    "FrozenModel",
    "LayerScale",
    "MAPHead",
    "MaskedPatchPrediction",
    "MlpBlock",
    "MultiHeadSelfAttention",
    "PatchEncoder",
    "PrefixTokens",
    "R26_ViT_B32",
    "R26_ViT_S32",
    "R50_ViT_B16",
    "R50_ViT_L32",
    "R_ViT_Ti16",
    "ResNetStem",
    "StdConv2D",
    "TransformerBlock",
    "ViT",
    "ViT_B8",
    "ViT_B14",
    "ViT_B16",
    "ViT_B32",
    "ViT_H14",
    "ViT_L14",
    "ViT_L16",
    "ViT_L32",
    "ViT_S14",
    "ViT_S16",
    "ViT_S32",
    "ViT_Ti16",
    "build_variant",
    "count_parameters",
    "export_model",
    "freeze",
    "interpolation_matrix",
    "load_artifact",
    "load_image",
    "load_weights",
    "model_from_checkpoint",
    "patch_color_targets",
    "preprocess_input",
    "resize_position_embedding",
]
