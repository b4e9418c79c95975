"""Building blocks the methods share: GMM/kNN label-noise detection, micro-batch accumulation and the
gradient cache."""
