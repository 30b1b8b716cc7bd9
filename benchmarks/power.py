"""The smallest accuracy difference to `original` that an experiment resolves after Holm:
the normal approximation of the paired sign-flip test (`sign_flip_p` of
analyses/inference.py), checked by simulating that test on planted differences.

A comparison pools N = runs x n_test image evaluations; a share q of them are discordant
(one representation right, the other wrong). A difference d then gives the statistic
z = d sqrt(N / q), and Holm's first step over m comparisons asks for p < 0.05 / m. With
80% power: d = (z_{1 - 0.025/m} + z_{0.8}) sqrt(q / N). Runs that redraw their split
overlap in their test images; counting every evaluation as its own image makes N an upper
bound, and d a lower one, when the dataset is small against runs x n_test.

    .venv/bin/python benchmarks/power.py
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from visual_ablation.analyses.inference import sign_flip_p

EXPERIMENTS = {
    # name: (images in the test split per run, runs, comparisons in a Holm family)
    "default (1,000 images, 3 runs, 7 x 8)": (200, 3, 56),
    "power-10k (10,000 images, 10 runs, 7 x 8)": (2000, 10, 56),
    "scale-100k (100,000 images, 10 runs, 7 x 18)": (20000, 10, 126),
}


def detectable(n_evaluations: int, discordance: float, comparisons: int, power=0.8) -> float:
    z = sps.norm.ppf(1 - 0.025 / comparisons) + sps.norm.ppf(power)
    return float(z * np.sqrt(discordance / n_evaluations))


def simulated_power(n_evaluations, discordance, comparisons, difference, trials=400) -> float:
    """Share of simulated comparisons whose sign-flip p passes Holm's first step: each
    evaluation discordant with probability q, in favour of the representation with
    probability (1 + d / q) / 2, so that the mean difference is d."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(trials):
        discordant = rng.random(n_evaluations) < discordance
        up = rng.random(n_evaluations) < (1 + difference / discordance) / 2
        diffs = np.where(discordant, np.where(up, 1, -1), 0)
        hits += sign_flip_p(diffs) < 0.05 / comparisons
    return hits / trials


def main() -> None:
    print("| experiment | evaluations | q = 0.2 | q = 0.3 | q = 0.4 | simulated power at q = 0.3 |")
    print("|---|---|---|---|---|---|")
    for name, (n_test, runs, m) in EXPERIMENTS.items():
        n = n_test * runs
        d = {q: detectable(n, q, m) for q in (0.2, 0.3, 0.4)}
        check = simulated_power(n, 0.3, m, d[0.3])
        cells = " | ".join(f"{100 * v:.1f} points" for v in d.values())
        print(f"| {name} | {n:,} | {cells} | {check:.2f} |")


if __name__ == "__main__":
    main()
