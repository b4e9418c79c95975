"""Config: defaults, presets, overrides, and an early error naming the key for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tcl_lite.config import Config, config_docs, load_config, parse_time_budget, save_config
from tcl_lite.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_digits_run():
    cfg = load_config()
    assert (cfg.method, cfg.data.dataset) == ("ce", "digits")
    assert (cfg.data.noise_type, cfg.data.noise_rate) == ("symmetric", 0.4)


def test_overrides_are_typed_and_dotted():
    cfg = load_config(None, ["train.epochs=3", "optim.lr=1", "model.arch=preact_resnet18", "optim.betas=[0.8, 0.9]",
                             "train.time_budget=11h30m"])
    assert cfg.train.epochs == 3 and isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.model.arch == "preact_resnet18" and cfg.optim.betas == [0.8, 0.9]
    assert parse_time_budget(cfg.train.time_budget) == 11.5 * 3600


@pytest.mark.parametrize("override, words", [
    ("train.epoch=3", ["unknown config key 'train.epoch'", "train.epochs"]),
    ("trian.epochs=3", ["unknown config key 'trian'", "train"]),
    ("train.epochs=abc", ["'train.epochs'", "expected int"]),
    ("train.epochs=0", ["'train.epochs'", ">= 1"]),
    ("data.noise_rate=1.5", ["'data.noise_rate'", "<= 1.0"]),
    ("data.noise_rate=-0.1", ["'data.noise_rate'", ">= 0.0"]),
    ("method=mixmatch", ["'method'", "ce, tcl, mlnt"]),
    ("optim.name=adam", ["'optim.name'", "adamw8bit"]),
    ("train.gradient_accumulation_steps=5", ["'train.gradient_accumulation_steps'", "divide"]),
    ("train.time_budget=soon", ["'train.time_budget'", "11h30m"]),
    ("data.noise_type=file", ["'data.noise_file'"]),
    ("train.cpu=maybe", ["'train.cpu'", "expected bool"]),
    ("epochs", ["key=value"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_yaml_base_chain_and_unknown_key(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train: {epochs: 7, batch_size: 32}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain: {epochs: 9}\n")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.batch_size) == (9, 32)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: tiny_cnn, depth: 3}\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.depth'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["method=tcl", "tcl.warmup_epochs=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert isinstance(yaml.safe_load((tmp_path / "config.yaml").read_text()), dict)


def test_every_preset_loads():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert presets
    for p in presets:
        assert isinstance(load_config(p), Config), p


def test_readme_documents_every_key():
    readme = (ROOT / "README.md").read_text()
    for line in config_docs().splitlines()[2:]:
        key = line.split("`")[1]
        assert f"`{key}`" in readme, f"README does not document {key}; run `make config-docs`"


def test_command_line_options_and_overrides_mix_in_any_order():
    from tcl_lite.cli.train import parse_train_args

    a = parse_train_args(["--resume", "train.epochs=2", "--output-dir", "runs/x", "method=tcl"])
    assert a.resume is True and a.output_dir == "runs/x" and a.overrides == ["train.epochs=2", "method=tcl"]
    b = parse_train_args(["method=tcl", "--resume", "runs/x", "train.epochs=3"])
    assert b.resume == "runs/x" and b.overrides == ["method=tcl", "train.epochs=3"]


def test_bare_yaml_words_are_strings_where_strings_are_expected(tmp_path):
    cfg = load_config(None, ["train.mixed_precision=no", "train.cpu=yes"])
    assert cfg.train.mixed_precision == "no" and cfg.train.cpu is True
    path = tmp_path / "p.yaml"
    path.write_text("train: {mixed_precision: no}\n")
    with pytest.raises(ConfigError, match=r"'train.mixed_precision'.*quote it"):
        load_config(path)
