"""DivideMix (``method=dividemix``): the method, its config section, its losses and the co-divide.
Imports nothing: the method's config section is read without torch (``tcl_lite/methods/__init__.py``
declares the method)."""
