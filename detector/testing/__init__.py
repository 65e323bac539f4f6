"""Test helpers shared by the project's test-suite (importable, no pytest dependency)."""

from detector.testing.gradients import TOLERANCES, GradientReport, check_gradients

__all__ = ["TOLERANCES", "GradientReport", "check_gradients"]
