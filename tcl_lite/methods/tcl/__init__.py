"""TCL (``method=tcl``): the method, its config section and its losses."""

from tcl_lite.methods.tcl.method import TCL

__all__ = ["TCL"]
