"""Kitchenware image classifier: data -> training -> model store -> BentoML service."""

__version__ = "0.1.0"

MODEL_NAME = "kitchenware"  # the synthetic demo model (saved_model/) in the BentoML store
# The published kitchenware Xception (kitchenware.modelbuild.pretrained): the default served model.
PRETRAINED_MODEL_NAME = "kitchenware-xception"
# What train.py saves by default: never the demo's or the published model's name, so a
# training run cannot change what `make serve MODEL=demo` or `make serve` answers with.
TRAINED_MODEL_NAME = "kitchenware-trained"
