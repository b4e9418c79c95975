"""Building blocks the methods share: GMM/kNN label-noise detection, micro-batch accumulation, the
gradient cache and the trust diagnostics of a run's verdicts."""
