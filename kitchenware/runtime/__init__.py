"""What the bento runs: metadata, preprocessing, the TensorFlow and OpenVINO backends, manifest."""
