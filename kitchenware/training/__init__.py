"""Training: labelled images -> checked, split data -> two-phase fit -> evaluation -> store."""
