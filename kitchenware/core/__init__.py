"""What training and serving share: preprocessing, metadata, the model store, inference."""
