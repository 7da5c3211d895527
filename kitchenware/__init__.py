"""Kitchenware image classifier: data -> training -> model store -> BentoML service."""

__version__ = "0.1.0"

MODEL_NAME = "kitchenware"  # name of the model in the BentoML store
