"""Embeddings: text to vectors, cached by content."""
