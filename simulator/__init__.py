"""A configurable traffic simulator: seeded scenarios run against a live titrate service over HTTP.

* :mod:`simulator.scenario` — the frozen scenario models (population, arrivals, true effects, registration);
* :mod:`simulator.traffic` — pure, seeded, vectorised draws of units and outcomes, and the true lifts;
* :mod:`simulator.driver` — runs a scenario day by day through the SDK (or ``/predict``) and the allocation step;
* :mod:`simulator.presets` — the built-in scenarios; :mod:`simulator.overrides` — command-line changes to them.

Like the SDK and the console it talks to the service only over REST: it imports nothing of ``api``,
``bandits`` or ``scorecards``.
"""
