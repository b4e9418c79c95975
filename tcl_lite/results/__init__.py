"""After-run readers of a run directory: report, plots, gallery, label issues, export of per-sample verdicts."""
