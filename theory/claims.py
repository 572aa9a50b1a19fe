"""The structured result every claim returns."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """Outcome of checking one claim: what was claimed, the numbers, and whether it held."""

    claim: str  # THEORY.md reference, e.g. "F.7"
    statement: str
    passed: bool
    numbers: dict
    tolerance: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        nums = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.numbers.items())
        return f"{'PASS' if self.passed else 'FAIL'} {self.claim}: {self.statement} ({nums}; tol {self.tolerance:g})"
