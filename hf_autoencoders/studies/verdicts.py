"""Verdicts on the textbook's claims, judged against the spread of the numbers.

Every claim an experiment checks ends as one of three verdicts:

- **confirmed**: the difference goes the way the claim says and is larger than the noise threshold;
- **contradicted**: it goes the other way and is larger than the threshold;
- **within noise**: it is smaller than the threshold.

The rule (`difference`): with d = mean(a) - mean(b) over seeds and the standard error of that difference
SE = sqrt(s_a^2 / n_a + s_b^2 / n_b) (sample standard deviations over seeds; a single run contributes 0), the
threshold is max(2 SE, floor). The floor is the noise level of one run where the spread is not measured (a single
seed, or a deterministic number such as PCA's error): the seed-to-seed standard deviation `compare` measured at the
seed budget, doubled (see `FLOORS`). With three seeds, 2 SE is about a 90% two-sided t-interval. Claims that need
several comparisons combine them (`all_of`): confirmed if every part is, contradicted if any part is, otherwise
within noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CONFIRMED, CONTRADICTED, WITHIN_NOISE = "confirmed", "contradicted", "within noise"
NOT_MEASURED = "not measured"

# The smallest difference read as real for one run (about twice the seed-to-seed standard deviation that the seed
# budget's `compare` measured on MNIST, rounded up): PSNR in dB, edge sharpness, prior mismatch, silhouette, and a
# relative floor (a fraction of the larger of the two values) for Frechet distances.
FLOORS = {"psnr": 0.3, "edge_sharpness": 0.02, "prior_mismatch": 0.05, "silhouette": 0.01, "relative": 0.05}
RULE = ("difference of the means over seeds against max(2 SE, floor), SE = sqrt(s_a^2/n_a + s_b^2/n_b) over seeds; "
        "the floor stands for the spread of one run")


@dataclass
class Claim:
    """A textbook claim, the verdict the numbers give it, the numbers, and the rule that turned one into the other."""

    key: str
    claim: str
    verdict: str
    evidence: str
    rule: str = RULE

    def sentence(self) -> str:
        return f"**{self.verdict.capitalize()}**: {self.claim}. {self.evidence}."

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Difference:
    """mean(a) - mean(b), its standard error over seeds and the threshold it is judged against."""

    a: float
    b: float
    difference: float
    standard_error: float
    threshold: float

    def verdict(self, claimed_sign: int = 1) -> str:
        """`claimed_sign` +1: the claim says a > b; -1: a < b."""
        if not (math.isfinite(self.difference) and math.isfinite(self.threshold)):
            return NOT_MEASURED
        if abs(self.difference) <= self.threshold:
            return WITHIN_NOISE
        return CONFIRMED if self.difference * claimed_sign > 0 else CONTRADICTED

    def text(self, unit: str = "", digits: int = 2) -> str:
        u = f" {unit}" if unit else ""
        spread = f"SE {self.standard_error:.{digits}f}" if self.standard_error > 0 else "one run each: the floor"
        return (f"{self.a:.{digits}f} vs {self.b:.{digits}f}{u}, difference {self.difference:+.{digits}f}{u} "
                f"(threshold {self.threshold:.{digits}f}{u}, {spread})")


def mean_and_variance(values: list[float]) -> tuple[float, float, int]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, variance, n


def difference(a: list[float], b: list[float], floor: float = 0.0, relative_floor: float = 0.0) -> Difference:
    """mean(a) - mean(b) judged against max(2 SE, floor, relative_floor * max(|mean a|, |mean b|))."""
    mean_a, var_a, n_a = mean_and_variance(a)
    mean_b, var_b, n_b = mean_and_variance(b)
    if not (n_a and n_b):
        return Difference(mean_a, mean_b, math.nan, math.nan, math.nan)
    se = math.sqrt(var_a / n_a + var_b / n_b)
    threshold = max(2 * se, floor, relative_floor * max(abs(mean_a), abs(mean_b)))
    return Difference(mean_a, mean_b, mean_a - mean_b, se, threshold)


def all_of(verdicts: list[str]) -> str:
    """One verdict for a claim made of several comparisons."""
    if any(v == NOT_MEASURED for v in verdicts) or not verdicts:
        return NOT_MEASURED
    if all(v == CONFIRMED for v in verdicts):
        return CONFIRMED
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    return WITHIN_NOISE


def within_margin(values: list[float], target: float, margin: float) -> tuple[str, float, float]:
    """An equality claim, mean(values) = target up to `margin`: confirmed if the interval mean +- 2 SE lies inside
    target +- margin, contradicted if it lies wholly outside, otherwise within noise. Returns (verdict, gap, SE)."""
    mean, variance, n = mean_and_variance(values)
    if not n:
        return NOT_MEASURED, math.nan, math.nan
    se = math.sqrt(variance / n)
    gap = mean - target
    if abs(gap) + 2 * se <= margin:
        return CONFIRMED, gap, se
    if abs(gap) - 2 * se > margin:
        return CONTRADICTED, gap, se
    return WITHIN_NOISE, gap, se


__all__ = ["CONFIRMED", "CONTRADICTED", "Claim", "Difference", "FLOORS", "NOT_MEASURED", "RULE", "WITHIN_NOISE",
           "all_of", "difference", "mean_and_variance", "within_margin"]
