"""Analysis: scorecards, the ship/no-ship decision and the design calculator, over the ``scorecards`` package."""
