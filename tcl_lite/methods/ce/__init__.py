"""Plain cross-entropy (``method=ce``)."""

from tcl_lite.methods.ce.method import CrossEntropy

__all__ = ["CrossEntropy"]
