"""Inference backends: each one loads a model and runs float32 NCHW batches through it."""
