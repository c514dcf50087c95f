"""Decoding, preprocessing and running the model."""
