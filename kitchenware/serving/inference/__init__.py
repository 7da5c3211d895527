"""The inference pipeline: model lookup, decoding uploads, the batcher, async tasks."""
