"""Plain cross-entropy (``method=ce``). Imports nothing: the method's
config section is read without torch (``tcl_lite/methods/__init__.py`` declares the method)."""
