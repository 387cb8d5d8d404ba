"""How an experiment states what its numbers show: findings checked against the textbook's claims, with the
differences below these tolerances read as noise."""

from __future__ import annotations

import math

from .study import Run

LIKELIHOOD = ["loss", "reconstruction_loss", "kl_loss", "elbo", "iwae_nll", "active_units"]
USEFULNESS = ["downstream_accuracy", "linear_probe_accuracy"]


def claim(holds: bool, textbook: str, observed: str, undecided: bool = False) -> str:
    """A finding that states whether the numbers agree with a textbook claim (`undecided`: too close to call)."""
    if undecided:
        return f"The numbers do not settle the textbook claim that {textbook}: {observed}."
    if holds:
        return f"As the textbook says, {textbook}: {observed}."
    return f"**Contrary to the textbook claim** that {textbook}, {observed}."


def close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance


# Smaller differences than these (dB, probability, nats, score, silhouette, accuracy) are read as noise.
PSNR_TOL, CONFIDENCE_TOL, ENTROPY_TOL, SCORE_TOL, SILHOUETTE_TOL, ACCURACY_TOL = 0.1, 0.02, 0.1, 0.1, 0.005, 0.005


def sign(difference: float, tolerance: float) -> int:
    return (difference > tolerance) - (difference < -tolerance)


def sample_differences(a: Run, b: Run) -> tuple[float, float, float]:
    """a minus b in mean max p(y|x), class entropy and the Inception-like score of their samples."""
    return tuple(metric(a, key) - metric(b, key)
                 for key in ("sample_mean_max_prob", "sample_class_entropy", "sample_inception_score"))


def sample_verdict(a: Run, b: Run) -> int:
    """+1 if a's samples beat b's, -1 if they lose, 0 if too close to call. Samples beat others when they are at
    least as recognisable (mean max p(y|x)) and as diverse (entropy of the predicted classes) and clearly better on
    one; when each wins on one, the Inception-like score exp E_x KL(p(y|x) || p(y)), which needs both, decides.
    Confidence alone would reward a generator that always draws the same blob."""
    dc, de, di = sample_differences(a, b)
    if dc >= -CONFIDENCE_TOL and de >= -ENTROPY_TOL and (dc > CONFIDENCE_TOL or de > ENTROPY_TOL):
        return 1
    if dc <= CONFIDENCE_TOL and de <= ENTROPY_TOL and (dc < -CONFIDENCE_TOL or de < -ENTROPY_TOL):
        return -1
    if abs(dc) > CONFIDENCE_TOL and abs(de) > ENTROPY_TOL and abs(di) > SCORE_TOL:
        return 1 if di > 0 else -1
    return 0


def sample_claim(a: Run, b: Run, textbook: str, a_name: str, b_name: str) -> str:
    """The claim that a's samples are better than b's, judged by `sample_verdict`."""
    verdict = sample_verdict(a, b)
    dc, de, _ = sample_differences(a, b)
    note = ""
    if abs(dc) > CONFIDENCE_TOL and abs(de) > ENTROPY_TOL and dc * de < 0:
        note = " (one is more recognisable, the other more diverse: the Inception-like score decides" + (
            ", and is too close to call)" if verdict == 0 else ")")
    return claim(verdict > 0, textbook, f"{a_name}: {sample_summary(a)}; {b_name}: {sample_summary(b)}{note}",
                 undecided=verdict == 0)


def sample_summary(run: Run) -> str:
    return (f"mean confidence {metric(run, 'sample_mean_max_prob'):.3f}, "
            f"{metric(run, 'sample_confident_fraction'):.2f} confident, class entropy "
            f"{metric(run, 'sample_class_entropy'):.2f} nats, IS-like score "
            f"{metric(run, 'sample_inception_score'):.2f}")


def metric(run: Run, key: str) -> float:
    return run.metrics.get(key, math.nan)


def increasing_steps(values: list[float], tolerance: float = 0.0) -> int:
    """How many consecutive pairs increase (by more than -tolerance)."""
    return sum(b >= a - tolerance for a, b in zip(values, values[1:]))
