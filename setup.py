"""Packages for setuptools: every ``tcl_lite*`` package, plus the top-level ``configs/`` folder shipped
as ``tcl_lite/configs`` (package data), so an installed ``tcl-lite train --config NAME`` finds the presets.
Everything else (name, dependencies, entry point) is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["tcl_lite", "tcl_lite.*"]), "tcl_lite.configs"],
    package_dir={"tcl_lite.configs": "configs"},
    package_data={"tcl_lite.configs": ["*.yaml"]},
)
