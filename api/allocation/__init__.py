"""The allocation updater: Thompson-sampling updates, ramp steps and automatic rollback, on a schedule."""
