"""The feedback loop: prediction recording, the corrections store and its faults, heatmaps."""
