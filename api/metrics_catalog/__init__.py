"""The metrics catalog: registered metric definitions the experiments and scorecards refer to."""
