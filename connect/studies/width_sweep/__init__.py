"""The width sweep (Zhang et al., arXiv 2605.09991, two-layer ReLU networks): ``connect width-sweep``."""
