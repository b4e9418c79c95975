"""The datasets and views, declared without torch: ``register_dataset``, ``register_view`` and the built-ins.

``data.dataset=NAME`` names an entry of ``tcl_lite.registry.DATASETS`` (a ``data.entries.Dataset``), a
method's ``views`` name entries of ``VIEWS`` (``data.entries.View``). The built-in ones are declared here
with what the config loader, ``config-docs`` and the README's tables need (a one-line ``help``, a dataset's
config ``check``, whether it needs files of the user) and a loader that imports their module (torch) when
data are first built. A user's or a test's dataset or view registers itself from its own module.

Importing ``tcl_lite.data`` (or any module of it) imports this module, and registers the ``data`` config
check: the selected dataset's own keys (``data.dataset=filelist`` needs ``data.train_list``...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tcl_lite.config import register_check
from tcl_lite.data.entries import Dataset, View, ViewContext, no_val_list
from tcl_lite.errors import ConfigError
from tcl_lite.registry import DATASETS, VIEWS

if TYPE_CHECKING:
    from tcl_lite.config import DataConfig

D = type[Dataset]


def register_dataset(cls: D) -> D:
    """Class decorator: make ``data.dataset=<cls.name>`` read by an instance of ``cls``; its config check is
    ``cls.check`` (a static method taking the data config) if it has one, else that it takes no val_list."""
    DATASETS.add(cls.name, cls(), help=cls.help, check=getattr(cls, "check", no_val_list),
                 self_contained=bool(getattr(cls, "self_contained", False)))
    return cls


def declare_dataset(name: str, load: Callable[[], D], *, help: str, check: Callable[[DataConfig], None] = no_val_list,
                    self_contained: bool = False) -> None:
    """A dataset whose class ``load()`` imports when first needed. ``self_contained``: it needs no files of the
    user (downloaded or embedded), so the notebook offers it."""

    def checked() -> Dataset:
        cls = load()
        if cls.name != name:
            raise ValueError(f"dataset {name!r} was declared, but {cls.__qualname__} is named {cls.name!r}")
        return cls()

    DATASETS.add(name, load=checked, help=help, check=check, self_contained=self_contained)


def register_view(name: str, per_sample: Callable[[ViewContext], Any],
                  batched: Callable[[ViewContext], Any] | None = None, *, help: str = "") -> None:
    """Make ``name`` a view a method can list in ``views`` (``data.entries.View`` says what the two forms are)."""
    VIEWS.add(name, View(per_sample, batched), help=help)


def declare_view(name: str, load: Callable[[], View], *, help: str) -> None:
    """A view whose ``View`` ``load()`` builds (importing its module) when first needed."""
    VIEWS.add(name, load=load, help=help)


def check_data(cfg: DataConfig) -> None:
    """The ``data`` section's checks that depend on the dataset (registered with the config loader)."""
    if cfg.dataset in DATASETS:  # an unknown name is the registry's error, raised before this runs
        DATASETS.declared(cfg.dataset)["check"](cfg)


def _check_filelist(cfg: DataConfig) -> None:
    if not cfg.train_list:
        raise ConfigError("config key 'data.train_list' is required with data.dataset=filelist")


register_check("data", check_data)


# ---------------------------------------------------------------------------------------------
# The built-in datasets and views. Each loader imports its module (torch) when data are first built.

def _digits() -> D:
    from tcl_lite.data.digits import Digits  # torch: loaded on first use (see the docstring)

    return Digits


def _cifar(name: str) -> Callable[[], D]:
    def load() -> D:
        from tcl_lite.data import cifar  # torch: loaded on first use

        return {"cifar10": cifar.Cifar10, "cifar100": cifar.Cifar100}[name]

    return load


def _imagefolder() -> D:
    from tcl_lite.data.imagefolder import ImageFolder  # torch: loaded on first use

    return ImageFolder


def _filelist() -> D:
    from tcl_lite.data.filelist import FileList  # torch: loaded on first use

    return FileList


def _view(name: str) -> Callable[[], View]:
    def load() -> View:
        from tcl_lite.data import batched_views as b  # torch: loaded on first use
        from tcl_lite.data import transforms as t  # torch: loaded on first use

        return {"weak": View(t.per_sample_weak, b.batched_weak), "strong": View(t.per_sample_strong, b.batched_strong),
                "test": View(t.per_sample_test, b.batched_test)}[name]

    return load


def _randaugment() -> View:
    from tcl_lite.data import randaugment  # torch and PIL: loaded on first use

    return View(randaugment.per_sample_randaugment, randaugment.batched_randaugment)


declare_dataset("digits", _digits, self_contained=True,
                help="scikit-learn's bundled 8x8 digits (embedded, no download), resized to `data.image_size`; "
                     "`data.digits_test_fraction` held out as the test set")
declare_dataset("cifar10", _cifar("cifar10"), self_contained=True,
                help="torchvision's CIFAR-10 in `data.root` (downloaded when the network allows; otherwise an error "
                     "that says where to put it)")
declare_dataset("cifar100", _cifar("cifar100"), self_contained=True,
                help="torchvision's CIFAR-100, as `cifar10`")
declare_dataset("imagefolder", _imagefolder,
                help="`data.root/train/<class>/*`, optionally `data.root/val/<class>/*` and "
                     "`data.root/test/<class>/*`, e.g. `../shared/data/cifar10-jpeg` extracted")
declare_dataset("filelist", _filelist, check=_check_filelist,
                help="Clothing1M-style lists: `data.train_list` (and optionally `data.val_list`, `data.test_list`) of "
                     "`relative/path label` lines under `data.root` (or `key_list,label_kv` pairs as the Clothing1M "
                     "release ships them)")

declare_view("weak", _view("weak"), help="random crop with padding S/8 + horizontal flip (the reference's weak view)")
declare_view("strong", _view("strong"),
             help="RandomResizedCrop(scale 0.2-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, "
                  "solarize p 0.5 (TCL's strong view)")
declare_view("test", _view("test"), help="no augmentation (evaluation, full passes)")
declare_view("randaugment", _randaugment,
             help="ProMix's strong view: RandAugment (3 of 14 operations) + Cutout, then flip and crop (CIFAR-100: "
                  "crop then flip, the dataset's `crop_then_flip` view option)")
