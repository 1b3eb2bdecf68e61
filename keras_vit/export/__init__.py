"""Export: SavedModel (TF Serving), TFLite, ONNX and OpenVINO, checked against the Keras model.

``export_model`` writes an export (``keras_vit.export.layout`` holds its
folder layout and ``export_info.json``), ``keras_vit.export.parity`` checks
every artifact, and ``load_artifact`` runs any of them again.
"""

from keras_vit.export.artifacts import Artifact, load_artifact
from keras_vit.export.exporter import FORMATS, ExportResult, export_model
from keras_vit.export.layout import ExportInfo
from keras_vit.export.parity import ExportParityError, ParityRow

__all__ = [
    "FORMATS",
    "Artifact",
    "ExportInfo",
    "ExportParityError",
    "ExportResult",
    "ParityRow",
    "export_model",
    "load_artifact",
]
