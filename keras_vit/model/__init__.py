"""The Vision Transformer: variant table, layers, kernels, position embeddings, ResNet stem, ``ViT``."""
