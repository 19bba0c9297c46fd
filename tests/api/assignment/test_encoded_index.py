"""The snapshot's layer index answers with pre-encoded members, byte for byte the dict-of-fragments join."""

from __future__ import annotations

from api.assignment.snapshot import EncodedAssignment, assignment_fragments, encoded_index, gc_paused
from bandits.bucketing import ExperimentConfig, VariantConfig, assign
from bandits.index import assign_all


def _configs() -> dict[str, ExperimentConfig]:
    configs = [ExperimentConfig(key=f"e{i}", salt=f"e{i}", status="running", control="c",
                                variants=(VariantConfig("c", 0.5), VariantConfig("t", 0.5, {"x": i, "s": "é"})),
                                layer=f"layer-{i % 4}", layer_start=(i // 4) * 2000, layer_end=(i // 4 + 1) * 2000)
               for i in range(20)]
    configs.append(ExperimentConfig(key="flat", salt="flat", status="running", control="c", traffic=0.5,
                                    variants=(VariantConfig("c", 0.5), VariantConfig("t", 0.5))))
    return {c.key: c for c in configs}


def test_encoded_answers_equal_the_spec_and_join_to_the_same_bytes() -> None:
    configs = _configs()
    fragments = assignment_fragments(configs)
    index = encoded_index(configs, fragments)
    for i in range(2000):
        unit = f"unit-{i}"
        results = assign_all(index, unit, {})
        naive = {(r.experiment, r.variant, r.allocation_version, r.exposed)
                 for c in configs.values() if (r := assign(c, unit)) is not None}
        assert {(r.experiment, r.variant, r.allocation_version, r.exposed) for r in results} == naive
        layered = [r for r in results if r.experiment != "flat"]
        assert all(type(r) is EncodedAssignment for r in layered)
        assert [r.fragment for r in layered] == [fragments[(r.experiment, r.variant)] for r in layered]  # type: ignore[attr-defined]


def test_gc_paused_restores_the_collector_state() -> None:
    import gc

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
