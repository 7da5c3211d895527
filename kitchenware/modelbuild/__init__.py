"""Making a servable model: OpenVINO conversion (int8, gates), pretrained and store imports."""
