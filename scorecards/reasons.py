"""Why a statistic could not be computed.

Statistics in this package never raise on degenerate *data* (too few units, no variance, a zero
control mean): they return NaN / ``None`` in the affected fields and name the cause here, so a
scorecard can still render every other number.  Invalid *arguments* (negative counts, ``alpha``
outside (0, 1), an unknown ``kind``) are programming errors and raise ``ValueError``.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Enumerated cause attached to every result; ``OK`` when every field was computed."""

    OK = "ok"
    TOO_FEW_UNITS = "too_few_units"  # n < 2 in an arm: no n − 1 variance
    ZERO_VARIANCE = "zero_variance"  # standard error of the difference is 0: no test statistic
    ZERO_CONTROL_MEAN = "zero_control_mean"  # relative lift μt/μc − 1 undefined
    # Fieller's set for μt/μc − 1 is unbounded: the control mean is not significantly different from 0
    UNBOUNDED_RELATIVE_CI = "unbounded_relative_ci"
    NONPOSITIVE_CONTROL_MEAN = "nonpositive_control_mean"  # relative margin meaningless when μc ≤ 0
    ZERO_DENOMINATOR = "zero_denominator"  # ratio metric with Σx = 0 in an arm
    ZERO_COVARIATE_VARIANCE = "zero_covariate_variance"  # CUPED covariate constant: no adjustment
    NO_UNITS = "no_units"  # SRM / allocation with zero total units
    TOO_FEW_VARIANTS = "too_few_variants"  # SRM needs at least two cells with positive weight
