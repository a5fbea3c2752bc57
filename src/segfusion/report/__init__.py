"""Aggregation of gathered metrics into tables, plots and provenance."""
