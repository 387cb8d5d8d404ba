"""Nearest-code search: milliseconds to find the nearest of K = 512 codes of d = 64 for N = 128 images x 7x7
positions, ours (||z||^2 - 2 z.e + ||e||^2 in one addmm) against `torch.cdist`, explicit broadcast differences and
pythae's version (three separate terms, then a one-hot matmul instead of an embedding lookup); all must pick the
same codes (`same_codes`).

    python benchmarks/quantizer_distances.py [--quick | --smoke]
"""

from __future__ import annotations

import time

import torch
from _common import median, section_main


def quantizer_distances(quick: bool, n=128 * 49, k=512, d=64) -> dict:
    """Milliseconds of each nearest-code search of `n` vectors among `k` codes of size `d` (the median of 3 timings
    when `quick`, else of 20), and whether they all pick the same codes."""
    from hf_autoencoders.models.quantizers import _squared_distances

    z, codes = torch.randn(n, d), torch.randn(k, d)

    def ours():
        indices = _squared_distances(z, codes).argmin(1)
        return torch.nn.functional.embedding(indices, codes)

    def cdist():
        return codes[torch.cdist(z, codes).argmin(1)]

    def broadcast():
        return codes[(z[:, None, :] - codes[None]).pow(2).sum(-1).argmin(1)]

    def pythae_style():
        distances = (z**2).sum(-1, keepdim=True) + (codes**2).sum(-1) - 2 * z @ codes.T
        one_hot = torch.nn.functional.one_hot(distances.argmin(-1), k).float()
        return one_hot @ codes

    repeats = 3 if quick else 20
    rows, reference = {}, ours()
    same = True
    for name, fn in (("ours_addmm", ours), ("cdist", cdist), ("broadcast", broadcast), ("pythae_style", pythae_style)):
        same &= torch.allclose(fn(), reference, atol=1e-5)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows[name] = 1e3 * median(times)
    return {"ms": rows, "same_codes": bool(same), "shape": f"N={n}, K={k}, d={d}"}


def run(bench) -> dict:
    return quantizer_distances(bench.mode != "full")


if __name__ == "__main__":
    section_main("quantizer_distances", __doc__)
