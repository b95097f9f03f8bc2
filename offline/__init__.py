"""Offline work that runs once at build time, never per request: model export, training-data loaders,
head training and evaluation. Lives apart from the runtime package `router` and is not in its wheel;
run it from a checkout with `python -m offline ...` (extra `semantic-router[offline]`)."""
