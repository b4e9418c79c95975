"""Settings that follow each method's reference implementation: the CIFAR normalisation constants each
reference uses (data.normalization=auto), and which methods synchronise BatchNorm across processes."""

from __future__ import annotations

import pytest

from tcl_lite.config import DataConfig
from tcl_lite.data.build import build_data, normalization
from tcl_lite.data.cifar import Cifar10, Cifar100
from tcl_lite.errors import DataError
from tcl_lite.methods import get_method

# Copied from the references' loaders (read through the public-code search):
# Hzzone/TCL models/basic_template.py normalize(); LiJunnan1992/DivideMix dataloader_cifar.py;
# Justherozen/ProMix dataloader_cifarn.py.
REFERENCE = {
    ("cifar10", "tcl"): ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("cifar100", "tcl"): ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    ("cifar10", "dividemix"): ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("cifar100", "dividemix"): ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    ("cifar10", "promix"): ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    ("cifar100", "promix"): ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}


@pytest.mark.parametrize("dataset,method", sorted(REFERENCE))
def test_auto_normalisation_is_the_methods_reference_constants(dataset, method):
    entry = {"cifar10": Cifar10, "cifar100": Cifar100}[dataset]()
    cls = get_method(method)
    got = normalization(DataConfig(dataset=dataset), entry, entry.stats, cls.normalization)
    assert got == REFERENCE[(dataset, method)]
    own = normalization(DataConfig(dataset=dataset, normalization="dataset"), entry, entry.stats, cls.normalization)
    assert own == entry.stats  # the dataset's own statistics: tcl_lite's earlier constants, as a named option


def test_a_method_without_reference_constants_and_a_dataset_without_sets_use_the_dataset_statistics():
    entry = Cifar10()
    assert normalization(DataConfig(dataset="cifar10"), entry, entry.stats, get_method("ce").normalization) == \
        ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    digits = build_data(DataConfig(), 0, reference="tcl")  # digits: computed statistics, no named sets
    assert digits.mean == build_data(DataConfig(normalization="dataset"), 0).mean


def test_an_unknown_set_is_refused_naming_the_choices():
    with pytest.raises(DataError, match="choose one of auto, dataset, tcl, dividemix, promix"):
        normalization(DataConfig(dataset="cifar10", normalization="imagenet"), Cifar10(), Cifar10.stats)
    with pytest.raises(DataError, match="data.dataset=digits has no such set"):
        build_data(DataConfig(normalization="tcl"), 0)
