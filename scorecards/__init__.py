"""Statistics on sufficient statistics for titrate scorecards (pure: arrays in, frozen results out).

DESIGN.md's notebook API::

    from scorecards import SampleStats, compare, sample_size_per_arm, srm_p_value
"""

from scorecards.bandit_inference import AdaptiveEstimates, adaptive_estimates, adaptive_ratio_estimates
from scorecards.bayesian import (
    EXACT_BETA_MAX_N,
    BayesianSummary,
    beta_chance_to_beat,
    chance_to_beat,
    normal_chance_to_beat,
    t_chance_to_beat,
)
from scorecards.cuped import CupedAdjustment, compare_cuped, compare_cuped_arrays, cuped_adjustment
from scorecards.decision import ContextLeaders, Decision, decide, decide_contextual, decide_thompson, describe_primary
from scorecards.fieller import FiellerInterval, fieller_relative_interval
from scorecards.frequentist import ArmEstimate, Comparison, arm_estimate, compare, compare_arrays, critical_value
from scorecards.gst import GstLook, alpha_spent, compare_gst, current_look, gst_bounds, repeated_p_value
from scorecards.guardrails import GuardrailResult, GuardrailStatus, guardrail_status
from scorecards.inference import (
    DifferenceInference,
    RelativeInference,
    difference_inference,
    relative_inference,
    welch_satterthwaite_df,
)
from scorecards.multiple_testing import AdjustedPValues, adjust_p_values, benjamini_hochberg, holm
from scorecards.plan import Plan, plan_fingerprint
from scorecards.power import Design, achieved_power, design, mde_at_n, sample_size_per_arm
from scorecards.quantile import (
    QuantileArm,
    QuantileEstimate,
    QuantileSpec,
    compare_quantiles,
    quantile_estimate,
    quantile_guardrail,
    quantile_query,
    read_quantile_rows,
)
from scorecards.reasons import Reason
from scorecards.sample_stats import CovariateStats, RatioStats, SampleStats
from scorecards.scorecard import Scorecard, build_scorecard
from scorecards.sequential import (
    SequentialInference,
    accumulate_looks,
    compare_sequential,
    mixture_variance,
    msprt,
    optimal_mixture_ratio,
)
from scorecards.srm import (
    AllocationPeriod,
    SegmentSrm,
    SrmResult,
    expected_counts,
    sequential_srm_check,
    sequential_srm_p_value,
    sequential_srm_p_values,
    srm_check,
    srm_check_history,
    srm_drill_down,
    srm_p_value,
    srm_p_values,
)
from scorecards.srm_sequential import CellCounts, sequential_srm_history_check, sequential_srm_tilt_p_values

__all__ = [
    "EXACT_BETA_MAX_N",
    "QuantileArm",
    "QuantileEstimate",
    "QuantileSpec",
    "compare_quantiles",
    "quantile_estimate",
    "quantile_guardrail",
    "quantile_query",
    "read_quantile_rows",
    "AdaptiveEstimates",
    "CellCounts",
    "adaptive_estimates",
    "adaptive_ratio_estimates",
    "sequential_srm_history_check",
    "sequential_srm_tilt_p_values",
    "AdjustedPValues",
    "AllocationPeriod",
    "ArmEstimate",
    "BayesianSummary",
    "Comparison",
    "ContextLeaders",
    "CovariateStats",
    "CupedAdjustment",
    "Decision",
    "Design",
    "FiellerInterval",
    "DifferenceInference",
    "GstLook",
    "GuardrailResult",
    "GuardrailStatus",
    "RatioStats",
    "Plan",
    "Reason",
    "RelativeInference",
    "SampleStats",
    "Scorecard",
    "SegmentSrm",
    "SequentialInference",
    "SrmResult",
    "accumulate_looks",
    "achieved_power",
    "adjust_p_values",
    "alpha_spent",
    "arm_estimate",
    "benjamini_hochberg",
    "beta_chance_to_beat",
    "build_scorecard",
    "chance_to_beat",
    "compare",
    "compare_arrays",
    "compare_cuped",
    "compare_cuped_arrays",
    "compare_gst",
    "compare_sequential",
    "critical_value",
    "cuped_adjustment",
    "current_look",
    "decide",
    "decide_contextual",
    "decide_thompson",
    "describe_primary",
    "design",
    "difference_inference",
    "expected_counts",
    "fieller_relative_interval",
    "gst_bounds",
    "guardrail_status",
    "holm",
    "mde_at_n",
    "mixture_variance",
    "msprt",
    "normal_chance_to_beat",
    "optimal_mixture_ratio",
    "plan_fingerprint",
    "relative_inference",
    "repeated_p_value",
    "sample_size_per_arm",
    "sequential_srm_check",
    "sequential_srm_p_value",
    "sequential_srm_p_values",
    "srm_check",
    "srm_check_history",
    "srm_drill_down",
    "srm_p_value",
    "srm_p_values",
    "t_chance_to_beat",
    "welch_satterthwaite_df",
]
