"""The Vision Transformer: variants, layers, kernels, position embeddings, ResNet stem, ``ViT``.

Data flow (``ViT.forward_intermediates`` names each stage) is written out in
``keras_vit.model.vit``; ``keras_vit.model.loading`` is where checkpoints
(``keras_vit.weights``) meet models.
"""
