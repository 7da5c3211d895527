"""SYNTHETIC six-class kitchenware drawings for tests and the demo model (not photos)."""
