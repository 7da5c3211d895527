"""The HTTP service around the model: settings, the upload gate, responses, metrics."""
