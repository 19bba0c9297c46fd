"""Comparing two model variants' outputs and latencies: pure numpy, arrays in, numbers out.

Used by shadow runs (the candidate scores the same inputs as control) and by the serving scorecard:
does the candidate's score distribution drift from control's (PSI), how often do they agree on the
label, how close are their embeddings, and how fast is each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Proportion substituted for an empty bin in the PSI. Why: ln(q/p) is undefined when either side is 0.
# 1e-4 is below any proportion a bin of a realistic sample (< 10k scores) can hold, so it only stands in
# for "empty", while keeping a bin that emptied out (or filled up) a large, finite contribution:
# (0.1 - 1e-4) * ln(0.1 / 1e-4) ~= 0.69 for one 10 % bin, well past the 0.25 "major shift" line.
PSI_EPSILON = 1e-4


def _as_1d(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def population_stability_index(
    reference: npt.ArrayLike, current: npt.ArrayLike, *, bins: int = 10, epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index of ``current`` scores against ``reference`` scores.

    ``PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`` over bins ``i``, where ``r_i`` and ``c_i`` are the
    proportions of each sample in bin ``i`` (Siddiqi, *Credit Risk Scorecards*, 2006; rule of thumb:
    < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift).

    Bins are fixed from the reference alone: the edges are its ``k/bins`` quantiles (``k = 1..bins-1``,
    numpy's default linear interpolation), so each bin holds ~1/bins of the reference and the index
    does not depend on the current sample's spread. Duplicate edges (ties, e.g. many scores of exactly
    1.0) are merged, so a discrete reference gets fewer bins. The outer bins are open
    (-inf, +inf), so current values outside the reference's range still count. A value equal to an edge
    goes to the bin above it.

    Empty bins get proportion ``epsilon`` (see ``PSI_EPSILON``) instead of 0; the other proportions are
    left as they are (not renormalised), the usual practice.

    Args:
        reference: 1-D scores of the baseline (control), any length >= 1.
        current: 1-D scores to compare (candidate), any length >= 1.
        bins: number of quantile bins (>= 2) before merging ties.
        epsilon: proportion used for empty bins (> 0).

    Returns:
        PSI >= 0 (0 when both samples fill the bins in the same proportions).
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    ref = _as_1d(reference, "reference")
    cur = _as_1d(current, "current")
    inner_edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    n_bins = inner_edges.size + 1
    # side="right": bin index = number of edges <= value, so a value on an edge lands in the upper bin.
    ref_counts = np.bincount(np.searchsorted(inner_edges, ref, side="right"), minlength=n_bins)
    cur_counts = np.bincount(np.searchsorted(inner_edges, cur, side="right"), minlength=n_bins)
    ref_p = ref_counts / ref.size
    cur_p = cur_counts / cur.size
    ref_p = np.where(ref_counts == 0, epsilon, ref_p)
    cur_p = np.where(cur_counts == 0, epsilon, cur_p)
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


def label_agreement_rate(labels_a: Sequence[object], labels_b: Sequence[object]) -> float:
    """Share of positions where two variants predicted the same label, in [0, 1].

    Args:
        labels_a, labels_b: labels for the same inputs, in the same order (equal lengths >= 1).
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"label sequences differ in length: {len(labels_a)} vs {len(labels_b)}")
    if len(labels_a) == 0:
        raise ValueError("label sequences are empty")
    agree = sum(1 for a, b in zip(labels_a, labels_b, strict=True) if a == b)
    return agree / len(labels_a)


def _as_matrix(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, dim) matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def mean_cosine_similarity(embeddings_a: npt.ArrayLike, embeddings_b: npt.ArrayLike) -> float:
    """Mean over rows of ``cos(a_i, b_i) = a_i . b_i / (|a_i| |b_i|)``, in [-1, 1].

    Row ``i`` of each matrix embeds the same input with two variants (same dimension). Vectors are
    normalised here, so unnormalised embeddings are fine.

    Args:
        embeddings_a, embeddings_b: (n, dim) matrices.

    Raises:
        ValueError: shapes differ, or a row has zero norm (its cosine is undefined).
    """
    a = _as_matrix(embeddings_a, "embeddings_a")
    b = _as_matrix(embeddings_b, "embeddings_b")
    if a.shape != b.shape:
        raise ValueError(f"embedding matrices differ in shape: {a.shape} vs {b.shape}")
    norms_a = np.linalg.norm(a, axis=1)
    norms_b = np.linalg.norm(b, axis=1)
    if np.any(norms_a == 0) or np.any(norms_b == 0):
        raise ValueError("a zero-norm embedding has no direction: cosine similarity undefined")
    cosines = np.einsum("ij,ij->i", a, b) / (norms_a * norms_b)
    # Rounding can push |cos| a hair above 1; clip so callers may take arccos.
    return float(np.clip(cosines, -1.0, 1.0).mean())


@dataclass(frozen=True, slots=True)
class NormsSummary:
    """L2 norms of a set of embeddings: count, mean, sample standard deviation (n - 1; 0 when n = 1),
    min, median, max. Normalised embeddings have all norms ~1; a drift here flags a pooling or dtype bug."""

    n: int
    mean: float
    std: float
    min: float
    median: float
    max: float


def embedding_norms_summary(embeddings: npt.ArrayLike) -> NormsSummary:
    """Summary of the row L2 norms of an (n, dim) embedding matrix."""
    norms = np.linalg.norm(_as_matrix(embeddings, "embeddings"), axis=1)
    return NormsSummary(
        n=int(norms.size),
        mean=float(norms.mean()),
        std=float(norms.std(ddof=1)) if norms.size > 1 else 0.0,
        min=float(norms.min()),
        median=float(np.median(norms)),
        max=float(norms.max()),
    )


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles in milliseconds over ``n`` requests."""

    n: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def latency_percentiles(latencies_ms: npt.ArrayLike) -> LatencySummary:
    """p50 / p95 / p99 (and mean) of request latencies in milliseconds.

    Percentiles use numpy's default linear interpolation between order statistics (Hyndman & Fan
    type 7), so p50 of ``[1, 2, 3, 4]`` is 2.5 and small samples give smooth, not stepwise, estimates.
    """
    values = _as_1d(latencies_ms, "latencies_ms")
    if np.any(values < 0):
        raise ValueError("latencies must be >= 0")
    p50, p95, p99 = np.percentile(values, [50.0, 95.0, 99.0])
    return LatencySummary(
        n=int(values.size), mean_ms=float(values.mean()), p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99)
    )
