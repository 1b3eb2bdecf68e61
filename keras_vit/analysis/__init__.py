"""Looking inside a ViT: attention rollout and distance, position embeddings, filters, few-shot evaluation."""
