"""Shared simulation helpers: sufficient statistics drawn directly, thousands of experiments at once.

For normal data, Σy ~ N(nμ, nσ²) and the centred sum of squares ~ σ²·χ²(n − 1), independently
(Cochran), so Σy² = SS + (Σy)²/n.  For bivariate normal data the centred scatter matrix is
Wishart(n − 1, Σ), independent of the sum vector ~ N(nμ, nΣ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats


@dataclass(frozen=True)
class Sim:
    """Sufficient-statistic samplers bound to a seeded generator."""

    rng: np.random.Generator

    def normal(self, n: int, mu: float, sigma: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, Σy, Σy²) arrays for `size` experiments of n iid N(mu, sigma²) units."""
        s = self.rng.normal(n * mu, sigma * np.sqrt(n), size)
        centred = sigma**2 * self.rng.chisquare(n - 1, size)
        return np.full(size, float(n)), s, centred + s**2 / n

    def binary(self, n: int, p: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, Σy, Σy²) for `size` experiments of n Bernoulli(p) units (Σy² = Σy)."""
        k = self.rng.binomial(n, p, size).astype(float)
        return np.full(size, float(n)), k, k

    def bivariate(
        self, n: int, mean: tuple[float, float], cov: np.ndarray, size: int
    ) -> tuple[np.ndarray, ...]:
        """(n, Σy, Σy², Σx, Σx², Σxy) for `size` experiments of n iid bivariate normal (y, x) units."""
        cov = np.asarray(cov, dtype=float)
        sums = self.rng.multivariate_normal(n * np.asarray(mean), n * cov, size)
        scatter = stats.wishart.rvs(df=n - 1, scale=cov, size=size, random_state=self.rng)
        sy, sx = sums[:, 0], sums[:, 1]
        return (
            np.full(size, float(n)),
            sy,
            scatter[:, 0, 0] + sy**2 / n,
            sx,
            scatter[:, 1, 1] + sx**2 / n,
            scatter[:, 0, 1] + sy * sx / n,
        )


@pytest.fixture
def sim() -> Sim:
    """A fresh, fixed-seed simulator per test (results reproducible and order-independent)."""
    return Sim(np.random.default_rng(20240611))
