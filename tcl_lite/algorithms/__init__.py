"""Method building blocks shared by the methods (noise detection, kNN, trust diagnostics, ...)."""
