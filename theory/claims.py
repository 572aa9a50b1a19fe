"""The structured result every claim returns, and its three statuses.

* ``PASS``: the claim of THEORY.md §F holds on the numbers;
* ``FAIL``: it does not (or the check crashed) — ``connect theory verify`` exits non-zero;
* ``FINDING``: a counterexample THEORY.md records as such (§F.2: AdamW's finite runs end
  outside the box), reported with its numbers; it is neither a pass nor a failure of the run.
"""

from __future__ import annotations

import dataclasses

PASS, FAIL, FINDING = "PASS", "FAIL", "FINDING"
STATUSES = (PASS, FINDING, FAIL)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """Outcome of checking one claim: what was claimed, the numbers, and its status.

    ``passed`` is ``status == PASS``; ``status`` defaults to PASS or FAIL from ``passed``, and a
    finding is made by :meth:`finding`."""

    claim: str  # THEORY.md reference, e.g. "F.7"
    statement: str
    passed: bool
    numbers: dict
    tolerance: float
    status: str | None = None

    def __post_init__(self):
        status = self.status if self.status is not None else PASS if self.passed else FAIL
        if status not in STATUSES or bool(self.passed) != (status == PASS):
            raise ValueError(f"status {status!r} with passed={self.passed}: use one of {', '.join(STATUSES)}, passed only with PASS")
        object.__setattr__(self, "status", status)

    @classmethod
    def finding(cls, claim: str, statement: str, numbers: dict, tolerance: float) -> ClaimResult:
        """A FINDING: ``statement`` says what the numbers show against the bound (with the numbers)."""
        return cls(claim, statement, False, numbers, tolerance, FINDING)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        nums = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.numbers.items())
        return f"{self.status} {self.claim}: {self.statement} ({nums}; tol {self.tolerance:g})"
