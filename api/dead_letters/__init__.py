"""Rows the database refused, kept with their error so one bad row never blocks the others."""
