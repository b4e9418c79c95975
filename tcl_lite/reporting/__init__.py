"""What a run shows and leaves behind: progress line, metrics log, plots and reports."""
