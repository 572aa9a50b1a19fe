"""Two-layer ReLU networks (:mod:`connect.models.relu`): data, losses, training, alignment and the measurement
of pairs along paths, for the width sweep and the theory."""
