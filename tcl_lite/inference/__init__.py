"""Using trained runs: label issues, predictions, exported models, audits."""
