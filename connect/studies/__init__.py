"""The studies of the seed papers, each a folder with ``config.py``, ``run.py`` (computes and writes results,
never imports matplotlib) and ``plots.py`` (draws from the results on disk only)."""
