"""Generative-recommendation substrate: item text embeddings and RQ-VAE semantic IDs."""
