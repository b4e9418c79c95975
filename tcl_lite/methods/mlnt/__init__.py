"""MLNT (``method=mlnt``): the method, its config section, the EMA teacher and the synthetic labels."""

from tcl_lite.methods.mlnt.method import MLNT

__all__ = ["MLNT"]
