"""DivideMix's co-divide statistics (numpy / scikit-learn; no model, no engine).

After the warm-up, each epoch starts with a pass of each network over the training set (test transform,
eval mode) giving the per-sample CE loss with the noisy label. As in the reference implementation
(LiJunnan1992/DivideMix, Train_cifar.py ``eval_train``), the losses are min-max normalised over the set,
averaged over the last 5 epochs at 90% noise (1 epoch otherwise), and a two-component 1-D Gaussian mixture
is fitted to them; a sample's clean probability ``w`` is the posterior of the component with the smaller
mean. Samples with ``w > p_threshold`` are labeled (with their ``w``), the rest unlabeled, and each network
is trained on the division made by the *other* one (``division_for``).

Note: the reference leaves the mixture's ``random_state`` unset (numpy's global RNG); here it is given
(``seed``) so that a resumed run recomputes exactly the division of the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from sklearn.mixture import GaussianMixture


def normalise_losses(losses: np.ndarray | Sequence[float]) -> np.ndarray:
    """Min-max normalisation over the set, in float32 as the reference's; all zeros when every loss
    is the same (the reference would divide by zero)."""
    x = np.asarray(losses, dtype=np.float32).reshape(-1)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros_like(x)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def clean_probability(losses_history: np.ndarray | Sequence[np.ndarray], *, max_iter: int = 10, tol: float = 1e-2,
                      reg_covar: float = 5e-4, seed: int, dtype: str = "float64") -> np.ndarray:
    """Per-sample clean probability from normalised losses.

    ``losses_history``: [N] or [H, N], the rows of the epochs to average (the caller passes the last
    epoch only, or the last 5 at 90% noise); each row already normalised (``normalise_losses``). The
    mean of the rows is fitted with ``GaussianMixture(2, max_iter, tol, reg_covar, random_state=seed)``
    (the reference's values are the defaults) and the posterior of the component with the smaller mean
    is returned [N].

    ``dtype``: the precision of the fit and of the result. ``float64`` as the reference: it hands
    scikit-learn a float32 torch tensor, which ``check_array`` converts to float64 (a tensor's dtype is not
    a numpy dtype, so the float32 it would keep is not recognised), and its ``w`` is the float64 posterior.
    ``float32``: the fit on the float32 losses themselves (tcl_lite before this was fixed).
    """
    history = np.asarray(losses_history, dtype=np.float32)
    if history.ndim == 1:
        history = history[None]
    if history.ndim != 2 or history.shape[1] < 2:
        raise ValueError(f"losses_history must be [N] or [H, N] with N >= 2, got shape {history.shape}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    # The losses and their mean in float32 as the reference's; the fit in `dtype`. The reference's
    # predict_proba keeps the tensor's float32 values (its check accepts any numeric dtype), so the
    # posterior is evaluated on them with the fitted (float64) parameters.
    x = history.mean(axis=0, dtype=np.float32).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    gmm.fit(x.astype(dtype))
    posterior = gmm.predict_proba(x)
    return posterior[:, int(np.argmin(gmm.means_.reshape(-1)))].astype(dtype)


class Division(NamedTuple):
    labeled_indices: np.ndarray  # int64, ascending
    labeled_w: np.ndarray  # float32, the clean probability of each labeled sample
    unlabeled_indices: np.ndarray  # int64, ascending


def division(probabilities: np.ndarray, threshold: float) -> Division:
    """Labeled = ``{i : w_i > threshold}`` (strictly, as the reference's ``prob > p_threshold``) with
    their ``w``; unlabeled = the rest."""
    w = np.asarray(probabilities).reshape(-1)
    labeled = w > threshold
    labeled_indices = np.flatnonzero(labeled).astype(np.int64)
    return Division(labeled_indices, w[labeled_indices].astype(np.float32),
                    np.flatnonzero(~labeled).astype(np.int64))


def division_for(network: int | str, probs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
                 threshold: float) -> Division:
    """The division to train ``network`` on: made from the OTHER network's clean probabilities.

    This is DivideMix's co-divide, and the one place where the networks are swapped: the reference
    trains net1 on ``loader.run('train', pred2, prob2)`` and net2 on ``loader.run('train', pred1, prob1)``,
    so that each network's own selection errors are not fed back to it (confirmation bias).

    ``probs``: the two networks' probabilities, either a mapping with exactly two keys (``network`` is
    one of them) or a sequence of two (``network`` is 0 or 1).
    """
    if isinstance(probs, Mapping):
        if len(probs) != 2 or network not in probs:
            raise ValueError(f"probs must map exactly two networks, one of them {network!r}; got {list(probs)}")
        (other,) = [k for k in probs if k != network]
        return division(probs[other], threshold)
    if len(probs) != 2 or network not in (0, 1):
        raise ValueError(f"probs must hold two networks' probabilities and network be 0 or 1, got "
                         f"{len(probs)} and {network!r}")
    return division(probs[1 - int(network)], threshold)
