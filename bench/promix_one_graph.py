"""ProMix's step as the reference arranges it: every forward of both networks in one graph, one backward.

Justherozen/ProMix (Train_promix.py ``train``) forwards, per step and network, the weak and the strong
batch through both heads and each head's mixup and FMix batch of the clean samples, keeps all of them for
the single ``loss.backward()`` of both networks' losses: up to 6B images per network, 12B for both (3,072
at B = 256). ``one_graph_step`` does that with tcl_lite's ProMix (same selection, draws, terms), so
``bench/step_memory.py --method promix`` (configuration ``one-graph``) puts the reference's memory next to the
micro-batched step's.
Benchmark code only: training never calls it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from tcl_lite.methods.base import StepInfo
from tcl_lite.methods.promix.losses import (
    HeadLogits,
    fmix,
    linear_ramp,
    mix_targets,
    mixup,
    promix_net_terms,
    unlabeled_weight,
    update_priors,
)
from tcl_lite.methods.promix.method import NETS, ProMix, head_logits


def one_graph_step(method: ProMix, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
    """Forward everything of both networks with a graph, then ONE backward of the summed loss."""
    p, models = method.pcfg, method.ctx.models
    (x, xs), y = batch["image"], batch["label"]
    for net in models.values():
        net.train()
    outs = {name: (models[name](x), models[name](xs)) for name in NETS}
    raw = {name: outs[name][0].logits.detach().float() for name in NETS}  # the selection's h(x), as the reference
    w = linear_ramp(info.epoch, p.w_ramp_epochs)
    beta = unlabeled_weight(info.epoch, weight=p.unlabeled_weight, epochs=p.unlabeled_epochs, debias_pl=p.debias_pl)
    total, targets = 0.0, method.step_targets(raw, y, batch, info)  # the method's own selection
    for i, name in enumerate(NETS):
        t = targets[name]
        draws = method._draws(info, i, t, x)
        clean = t.clean_rows()
        xc, tc = x[clean], t.targets[clean]
        heads = {}
        for head, d in draws.items():
            m, f = models[name](mixup(xc, d.mixup_lam, d.mixup_perm)), models[name](fmix(xc, d.fmix_mask, d.fmix_perm))
            heads[head] = HeadLogits(head_logits(outs[name][0], head), head_logits(outs[name][1], head),
                                     head_logits(m, head), head_logits(f, head))
        mix_t = {head: mix_targets(tc, d) for head, d in draws.items()}
        terms = promix_net_terms(heads["h"], heads["ap"], t, mix_t["h"], mix_t["ap"], w=w, beta=beta,
                                 debias_output=p.debias_output)
        total = total + terms["total"]
    method.ctx.backward(total)
    for name in NETS:
        method.priors[f"l_{name}"], method.priors[f"u_{name}"] = update_priors(targets[name], raw[name],
                                                                               p.prior_momentum)
    return {"loss": total.detach()}
