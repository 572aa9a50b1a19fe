"""Models: each is a pure ``init(key, cfg) -> params`` and ``apply(params, x) -> outputs``."""

from connect.models import relu

__all__ = ["relu"]
