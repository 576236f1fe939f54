"""Trust layer: calibration, explanations, OOD scores, robustness corruptions, sensor health."""
