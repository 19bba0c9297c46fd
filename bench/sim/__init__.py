"""Research code for the allocation benchmarks: seeded bandit simulations (regret, traffic share, estimate
bias and coverage) that ``bench/bench_allocation.py`` and ``bench/bench_contextual.py`` run and the tests check.

Not shipped: the service never simulates; it imports only the pure policies in ``bandits``.
"""
