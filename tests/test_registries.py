"""The registries of architectures, datasets and views (``tcl_lite.registry``): the config loader checks and
lists names from them without torch, ``tcl_lite.load_config`` registers the built-in ones, and the README's
tables are theirs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_env

from tcl_lite.cli.config_docs import rewrite, tables
from tcl_lite.config import load_config
from tcl_lite.errors import ConfigError
from tcl_lite.registry import ARCHS, DATASETS, VIEWS, Registry

_FRESH = """
import json, sys
out = {}
try:
    from tcl_lite.config import load_config
    load_config(None)
except Exception as e:
    out["l0"] = f"{type(e).__name__}: {e}"
import tcl_lite
cfg = tcl_lite.load_config(None, ["model.arch=resnet18_cifar", "data.dataset=cifar100", "method=dividemix"])
out["cfg"] = [cfg.model.arch, cfg.data.dataset, cfg.method]
try:
    tcl_lite.load_config(None, ["model.arch='timm:'"])
except Exception as e:
    out["family"] = str(e)
out["heavy"] = sorted(m for m in ("torch", "torchvision", "timm", "sklearn") if m in sys.modules)
print(json.dumps(out))
"""


def test_load_config_of_the_package_registers_the_builtins_without_torch():
    proc = subprocess.run([sys.executable, "-c", _FRESH], cwd=ROOT, env=run_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["l0"].startswith("ConfigError: config key 'method': 'ce' is not available: no method is registered")
    assert "`tcl_lite.load_config`" in out["l0"]
    assert out["cfg"] == ["resnet18_cifar", "cifar100", "dividemix"]
    assert "'timm:' is not available; choose one of tiny_cnn," in out["family"]  # a family needs a member
    assert out["heavy"] == []


def test_names_are_checked_and_listed_from_the_registries():
    with pytest.raises(ConfigError, match="'model.arch': 'vgg' is not available; choose one of tiny_cnn, .*"
                                          "resnet18_cifar, timm:<name>"):
        load_config(None, ["model.arch=vgg"])
    with pytest.raises(ConfigError, match="'data.dataset': 'svhn' is not available; choose one of digits, cifar10, "
                                          "cifar100, imagefolder, filelist"):
        load_config(None, ["data.dataset=svhn"])
    assert list(VIEWS) == ["weak", "strong", "test", "randaugment"]
    assert ARCHS.find("timm:convnext_tiny") == "timm:" and ARCHS.find("timm:") is None and ARCHS.find("vgg") is None
    assert ARCHS.declared("timm:resnet10t")["weights_file"] and not ARCHS.declared("tiny_cnn")["weights"]


def test_dataset_checks_live_with_the_datasets():
    with pytest.raises(ConfigError, match="'data.train_list' is required with data.dataset=filelist"):
        load_config(None, ["data.dataset=filelist"])
    with pytest.raises(ConfigError, match="'data.val_list' is for data.dataset=filelist, not cifar10"):
        load_config(None, ["data.dataset=cifar10", "data.val_list=val.txt"])
    assert DATASETS.declared("digits")["self_contained"] and not DATASETS.declared("imagefolder")["self_contained"]


def test_a_registry_refuses_both_forms_and_a_family_without_colon():
    r: Registry[int] = Registry("thing", "x.thing", filled_by="nowhere")
    with pytest.raises(ValueError, match="not both"):
        r.add("a", 1, load=lambda: 2)
    with pytest.raises(ValueError, match="family"):
        r.add("fam", 1, family=True)
    r.add("b", load=lambda: 3, help="bee")
    assert r.get_checked("b") == 3 and r.table() == "| `x.thing` | what it is |\n| --- | --- |\n| `b` | bee |"


def test_readme_tables_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text()
    for name in tables():
        assert f"<!-- {name}:start -->" in readme and f"<!-- {name}:end -->" in readme, name
    assert rewrite(readme) == readme, "run `make config-docs`"
