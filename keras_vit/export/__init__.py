"""Export: SavedModel (TF Serving), TFLite and ONNX, checked against the Keras model, and loading artifacts back."""
