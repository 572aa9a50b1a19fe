"""The GPT-2 connectivity study (Zhang et al., arXiv 2605.09991, §5): ``connect study gpt2``."""
