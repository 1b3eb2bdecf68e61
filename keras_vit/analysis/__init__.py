"""Looking inside a ViT: attention rollout and distance, position embeddings, filters, few-shot.

``inspection`` computes the numbers, ``fewshot`` the linear probe of Section 4.1 and
``plots`` the figures.
"""
