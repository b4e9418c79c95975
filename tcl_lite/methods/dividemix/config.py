"""The ``dividemix:`` config section (not registered here; the integrator adds it to ``Config``).

Defaults are the reference's CIFAR-10 settings at 50% symmetric noise (LiJunnan1992/DivideMix,
Train_cifar.py); the presets ``configs/cifar*_dividemix_*.yaml`` set the other noise settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcl_lite.config import opt


@dataclass
class DivideMixConfig:
    warmup_epochs: int = opt(10, "Epochs of plain CE on the noisy labels for each network before the first "
                             "co-divide (reference: 10 on CIFAR-10, 30 on CIFAR-100; epochs counted from 0, "
                             "so epoch `warmup_epochs` is the first DivideMix epoch).", ge=0)
    lambda_u: float = opt(25.0, "Final weight of the unlabeled MSE loss Lu (reference, CIFAR-10: 0 at 20% "
                          "symmetric noise, 25 at 50% and 80%, 50 at 90%, 0 at 40% asymmetric; CIFAR-100: 25 at "
                          "20%, 150 at 50/80/90%).", ge=0.0)
    p_threshold: float = opt(0.5, "Clean-probability threshold of the co-divide: samples with w > p_threshold "
                             "are labeled (reference: 0.5).", ge=0.0, le=1.0)
    temperature: float = opt(0.5, "Sharpening temperature T of the co-guessed and co-refined targets "
                             "(reference: 0.5).", gt=0.0)
    mix_alpha: float = opt(4.0, "Beta(a, a) parameter of MixMatch's lambda, then lambda = max(lambda, "
                           "1 - lambda) (reference: 4).", gt=0.0)
    loss_history: int = opt(1, "Epochs of normalised per-sample losses averaged before the GMM fit "
                            "(reference: 5 at 90% noise, 1 otherwise).", ge=1)
    warmup_penalty: str = opt("auto", "Add the confidence penalty (negative entropy of the predictions) to "
                              "the warm-up CE: `auto` = on for asymmetric noise (reference), `on`, `off`.",
                              choices=("auto", "on", "off"))
    gmm_max_iter: int = opt(10, "EM iterations of the two-component GMM on the losses (reference: 10).", ge=1)
    gmm_tol: float = opt(0.01, "Convergence tolerance of the GMM (reference: 1e-2).", gt=0.0)
    gmm_reg_covar: float = opt(5e-4, "Variance added to the GMM's covariances (reference: 5e-4).", ge=0.0)
    gmm_dtype: str = opt("float64", "Precision of the GMM fit and of the clean probabilities w: float64 as the "
                         "reference (scikit-learn converts the float32 torch tensor it is given); float32: the fit "
                         "on the float32 losses (tcl_lite's earlier behaviour, w differs up to ~1e-5).",
                         choices=("float64", "float32"))
    loader_tails: str = opt("keep", "The last partial batch of the warm-up and unlabeled loaders: `keep` as the "
                            "reference (391 warm-up steps at N = 50,000 and batch 128; a tail of fewer than 2 "
                            "samples per process is still dropped, which BatchNorm cannot train on), `drop` "
                            "(tcl_lite's earlier behaviour: 390).", choices=("keep", "drop"))
    rampup_epochs: float = opt(16.0, "Epochs over which the weight of Lu rises linearly from 0 to lambda_u "
                               "after the warm-up, by fractional epoch (reference: 16).", gt=0.0)
