"""Does the noise stop rule fire while a slow minority is still learning? A simulation (issue 15).

L is a sum over all cases, so when most cases have settled a minority still learning moves L only a
little above its noise floor, and the noise rule can fire while their DAD (and so the subset) still
changes. Each simulated case learns as ``a (1 - exp(-t / tau)) + noise``: the fast majority with tau = 3,
a slow share with tau = 25, per-case noise sd 0.02-0.08, 100 cases, 60 epochs, windows of 10. For each
share and seed the table gives where the default noise rule (1.5 x the floor) fires with and without the
slow-minority guard (``max_movers``), and the Jaccard of the subset it picks with the one picked at the
end of the run (the ambiguous strategy, 30% pruned).

    python -m scripts.experiments.slow_minority [--shares "[0,0.1,0.15,0.25]"] [--seeds 5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scripts.core.stop_rules import fired_window
from scripts.experiments.reference_runs import curve_against_final
from scripts.utils.cli import fire_strict


def simulate(
    n_cases: int = 100,
    epochs: int = 60,
    slow_share: float = 0.15,
    tau_slow: float = 25.0,
    tau_fast: float = 3.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, dice (n_cases, epochs), slow mask): the first ``slow_share`` of the cases learn slowly."""
    rng = np.random.default_rng(seed)
    plateau = rng.uniform(0.6, 0.95, n_cases)
    noise = rng.uniform(0.02, 0.08, n_cases)
    slow = np.arange(n_cases) < round(slow_share * n_cases)
    tau = np.where(slow, tau_slow, tau_fast)
    t = np.arange(1, epochs + 1)
    dice = plateau[:, None] * (1 - np.exp(-t[None, :] / tau[:, None]))
    dice = dice + rng.normal(0.0, 1.0, (n_cases, epochs)) * noise[:, None]
    return t, np.clip(dice, 0.0, 1.0), slow


def firing(
    epochs: np.ndarray, dice: np.ndarray, delta_t: int = 10, rate: float = 0.3, **rule: Any
) -> tuple[int | None, float | None]:
    """(epoch the noise rule fires at, Jaccard of its subset with the last window's), or (None, None)."""
    rows, _ = curve_against_final(epochs, dice, delta_t, rate)
    k = fired_window(rows, "noise", **rule)
    if k is None:
        return None, None
    return rows[k + 1]["epoch_end"], rows[k + 1]["jaccard_final_ambiguous"]


def table(
    shares: Sequence[float] = (0.0, 0.1, 0.15, 0.25),
    seeds: int = 5,
    noise_factor: float = 1.5,
    guards: Sequence[float] = (0.05, 0.1),
) -> str:
    """One markdown row per slow share: each rule's fired epochs over the seeds and their mean Jaccard."""
    rules = {f"noise {noise_factor}": {"noise_factor": noise_factor}}
    rules |= {f"+ movers <= {g}": {"noise_factor": noise_factor, "max_movers": g} for g in guards}
    lines = ["| slow share | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for share in shares:
        cells = []
        for settings in rules.values():
            results = [firing(*simulate(slow_share=share, seed=s)[:2], **settings) for s in range(seeds)]
            fired = [j for _, j in results if j is not None]
            epochs = "/".join(str(e) if e else "never" for e, _ in results)
            cells.append(f"{epochs}, J {np.mean(fired):.2f}" if fired else f"{epochs}")
        lines.append(f"| {share:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    fire_strict(table)
