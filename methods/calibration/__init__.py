"""SNN Calibration (Li et al., ICML 2021; docs/baseline-methods.md §2): the plugin and its
training-free bias and potential corrections, which AdaFire reuses."""

from snnbench.methods.calibration.method import CalibrationSettings, SNNCalibration

__all__ = ["CalibrationSettings", "SNNCalibration"]
