"""What ``titrate demo`` prints (issue 17 item 5): rounded numbers instead of raw floats and dicts, and a roll-out
rolled back on purpose says so with where the ramp stood and the guardrail that stopped it."""

from __future__ import annotations

from simulator import demo


def test_the_rollback_line_names_the_fraction_and_the_guardrail() -> None:
    ramp = {"experiment": "demo-ranker-rollout", "status": "rolled_back", "max_fraction_reached": demo._r(0.1 - 2e-17),
            "true_latency_regression": demo._r(0.30000000000000004), "latency_rel_lift": 0.2987,
            "latency_rel_ci": [0.2511, 0.3472], "days_run": 1, "days_planned": 12}
    line = demo.ramp_line(ramp)
    assert line.startswith("demo-ranker-rollout: rolled back at 10% (guardrail p95 latency +30%, 95% CI "
                           "[+25.1%, +34.7%]; planted +30%) after day 1 of 12")
    assert "on purpose" in line
    assert "0.0999" not in line
    assert "0.3000" not in line


def test_summary_numbers_are_rounded_and_intervals_rounded_outward() -> None:
    assert demo._r(0.09999999999999998) == 0.1
    assert demo._r(0.30000000000000004) == 0.3
    assert demo._r(None) is None
    assert demo._ci([0.123449, 0.456701]) == [0.1234, 0.4568]  # outward: what was inside stays inside
    assert demo._ci([-0.00001, None]) == [-0.0001, None]


def test_ab_bandit_and_contextual_lines_read_as_sentences() -> None:
    ab = {"experiment": "demo-checkout-ab", "decision": "ship", "variant": "one-page", "rel_lift": 0.1034,
          "rel_ci": [0.05, 0.16], "p_value": 0.00012, "true_rel_lift": 0.1, "flagged_segments": ["DE"]}
    assert demo.ab_line(ab) == ("demo-checkout-ab: decision ship (one-page), relative lift +10.3% (95% CI "
                                "[+5.0%, +16.0%], p = 0.00012); planted +10.0%; segments flagged: DE")
    bandit = {"experiment": "demo-headline-bandit", "decision": "ship", "variant": "b", "versions": 9,
              "final_weights": {"control": 0.02, "b": 0.9, "c": 0.08}, "best_true_arm": "b", "best_rel_lift": 0.2,
              "best_rel_ci": [0.1, 0.3], "best_pooled_rel_lift": 0.35, "best_true_rel_lift": 0.2}
    line = demo.bandit_line(bandit)
    assert "weights control 2%, b 90%, c 8%" in line
    assert "+20.0% stratified" in line
    assert "pooled, biased: +35.0%" in line
    contextual = {"experiment": "demo-platform-bandit", "decision": "keep_running", "versions": 7,
                  "leader_by_platform": {"ios": "b", "web": "a"},
                  "final_weights_by_platform": {"ios": {"a": 0.1, "b": 0.9}, "web": {"a": 0.5, "b": 0.5}},
                  "true_best_by_platform": {"ios": "b", "web": None}}
    assert demo.contextual_line(contextual) == (
        "demo-platform-bandit: decision keep_running after 7 allocation updates; leaders ios: b 90% (planted best "
        "b); web: a 50% (planted best none)")
    served = {"experiment": "demo-minilm", "latency_p50_ms": {"float32": 7.91, "bfloat16": None},
              "latency_p95_ms": {"float32": 12.04, "bfloat16": None}, "errors": {"float32": 0}}
    assert demo.serving_lines(served) == ["demo-minilm float32: p50 7.9 ms, p95 12.0 ms, 0 errors"]
