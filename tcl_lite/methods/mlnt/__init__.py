"""MLNT (``method=mlnt``): the method, its config section, the EMA teacher and the synthetic labels.
Imports nothing: the method's config section is read without torch (``tcl_lite/methods/__init__.py``
declares the method)."""
