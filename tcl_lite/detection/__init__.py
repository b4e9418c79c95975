"""Label-noise detection (TCL's GMM over representations), kNN accuracy and the export of its results."""

from tcl_lite.detection.gmm_detector import (
    CentreStats,
    Detection,
    collect_projections,
    detect,
    detection_metrics,
    detection_pass,
    gmm_clean_probability,
    label_posterior,
)
from tcl_lite.detection.knn import knn_accuracy, knn_predict

__all__ = [
    "CentreStats",
    "Detection",
    "collect_projections",
    "detect",
    "detection_metrics",
    "detection_pass",
    "gmm_clean_probability",
    "knn_accuracy",
    "knn_predict",
    "label_posterior",
]
