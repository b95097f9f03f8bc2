"""Semantic router: an Envoy ext_proc sidecar that picks the model for each OpenAI request."""

__version__ = "0.1.0"
