"""Experiment drivers (ablations, recipe searches): not part of the product core."""
