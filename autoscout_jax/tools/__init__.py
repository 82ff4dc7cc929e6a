"""Command-line tools around the simulators (predict_published,
calibration_report). Each is a small absl program over library functions."""
