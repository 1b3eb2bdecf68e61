"""keras-vit: the Vision Transformer for Keras 3 on TensorFlow.

    import keras_vit
    model = keras_vit.ViT_B16(num_classes=10, image_size=224)
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_vit.model.variants import SIZES, VARIANTS, count_parameters  # noqa: E402
from keras_vit.model.layers import (  # noqa: E402
    AddPositionEmbs,
    ClassToken,
    MlpBlock,
    MultiHeadSelfAttention,
    PatchEncoder,
    TransformerBlock,
)
from keras_vit.model.vit import FACTORIES, ViT, build_variant  # noqa: E402
from keras_vit.model.posemb import (  # noqa: E402
    POSEMB_INTERPOLATIONS,
    interpolation_matrix,
    resize_position_embedding,
)
from keras_vit.data.images import load_image, preprocess_input  # noqa: E402
from keras_vit.model.resnet import ResNetStem, StdConv2D  # noqa: E402
from keras_vit.weights import load_weights, model_from_checkpoint  # noqa: E402
from keras_vit.export.exporter import export_model  # noqa: E402
from keras_vit.export.artifacts import load_artifact  # noqa: E402

globals().update(FACTORIES)

__version__ = "0.1.0"
__all__ = [
    "AddPositionEmbs",
    "ClassToken",
    "MlpBlock",
    "MultiHeadSelfAttention",
    "PatchEncoder",
    "ResNetStem",
    "StdConv2D",
    "POSEMB_INTERPOLATIONS",
    "SIZES",
    "TransformerBlock",
    "VARIANTS",
    "ViT",
    "build_variant",
    "count_parameters",
    "export_model",
    "interpolation_matrix",
    "load_artifact",
    "load_image",
    "load_weights",
    "model_from_checkpoint",
    "preprocess_input",
    "resize_position_embedding",
    *FACTORIES,
]
