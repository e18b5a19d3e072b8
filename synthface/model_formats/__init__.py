"""Readers for morphable-model files users bring (one module per format)."""
