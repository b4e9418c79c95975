"""DivideMix (``method=dividemix``): the method, its config section, its losses and the co-divide."""

from tcl_lite.methods.dividemix.method import DivideMix

__all__ = ["DivideMix"]
