"""Launched by tests/test_tcl_distributed.py under `accelerate launch` with 2 gloo processes.

1. The contrastive loss on all-gathered projections equals the single-process loss on the same
   global batch, and so do the gradients after DDP's averaging.
2. TCL's exact mode under DDP: one step with micro_batches=2 gives the micro_batches=1 gradient.
3. A real TCL training run through the engine (detection before training and after the epoch), its
   BatchNorm synchronised (model.sync_bn=auto: TCL's reference does);
   every process writes its own w / prototypes / corrected labels for the test to compare.
4. model.sync_bn=on: each rank its half of a global batch; BatchNorm's running statistics and the averaged
   gradients equal one process's on the whole batch; with off, each rank's own half's.
Results go to OUTPUT/rank{R}.json and OUTPUT/rank{R}_tcl.safetensors.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

from tcl_lite.config import load_config
from tcl_lite.distributed import all_gather_with_grad
from tcl_lite.engine import trainer
from tcl_lite.methods import StepInfo, TrainContext
from tcl_lite.methods.build import build_networks
from tcl_lite.methods.tcl.losses import nt_xent
from tcl_lite.methods.tcl.method import TCL
from tcl_lite.models.network import build_model


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / (y.abs().max() + 1e-12)) for x, y in zip(a, b))


def contrastive_check(acc: Any, cfg: Any) -> dict:
    b, r = 8, acc.process_index
    torch.manual_seed(0)
    model = build_model(cfg.model, 10, in_channels=3, image_size=8, with_projector=True)
    reference = copy.deepcopy(model)
    ddp = acc.prepare(model)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2 * b, 3, 8, 8, generator=g)  # the global batch, the same on both ranks
    x2 = x1 + 0.3 * torch.randn(2 * b, 3, 8, 8, generator=g)
    mine = slice(r * b, (r + 1) * b)

    # data parallel: each rank its half, negatives gathered from both
    out = ddp(torch.cat([x1[mine], x2[mine]]))
    z1, z2 = out.proj.split(b)
    # + 0 * logits: DDP requires every parameter in the graph
    loss = nt_xent(all_gather_with_grad(z1), all_gather_with_grad(z2), 0.25) + 0 * out.logits.sum()
    acc.backward(loss)
    dist_grads = [p.grad.clone() for p in ddp.parameters()]

    # one process, the whole global batch
    ref = reference(torch.cat([x1, x2]))
    r1, r2 = ref.proj.split(2 * b)
    ref_loss = nt_xent(r1, r2, 0.25) + 0 * ref.logits.sum()
    ref_loss.backward()
    ref_grads = [p.grad.clone() for p in reference.parameters()]
    # what a per-rank loss without the gather would be: a different objective
    local_loss = nt_xent(r1[mine], r2[mine], 0.25)
    return {"loss": float(loss), "ref_loss": float(ref_loss), "local_loss": float(local_loss),
            "grad_rel_diff": _rel(dist_grads, ref_grads)}


def exact_mode_check(acc: Any, cfg: Any, out: Path) -> dict:
    from tcl_lite.data import build_data

    data = build_data(cfg.data, cfg.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, data.num_classes, in_channels=3, image_size=8, with_projector=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    method = TCL(TrainContext(cfg, acc, model, opt, data, out))
    g = torch.Generator().manual_seed(2)
    method.clean_probability = torch.rand(len(data.noisy_labels), generator=g)
    method.prototypes = torch.nn.functional.normalize(torch.randn(10, cfg.model.proj_dim, generator=g), dim=1)
    ds = data.train_views(TCL.views)
    mine = range(16 * acc.process_index, 16 * acc.process_index + 16)  # disjoint samples per rank
    batch = torch.utils.data.default_collate([ds[i] for i in mine])

    def grads(micro: int) -> tuple[list, float]:
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        method.ctx.micro_batches = micro
        logs = method.training_step(batch, StepInfo(50, 0, 0, 1))
        return [p.grad.clone() for p in model.parameters()], float(logs["contrastive"])

    g1, c1 = grads(1)
    g2, c2 = grads(2)
    return {"exact_grad_rel_diff": _rel(g2, g1), "exact_contrastive": [c1, c2]}


def _global_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Over all tensors at once (a bias before BatchNorm has a gradient of rounding noise only)."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b)) / max(float(y.abs().max()) for y in b)


def _bn_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var)]


def sync_bn_check(acc: Any, argv: list[str]) -> dict:
    b, r = 8, acc.process_index
    g = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(2 * b, 3, 8, 8, generator=g) + 1  # the global batch, the same on both ranks
    x[:b] += 3  # the halves differ: per-rank statistics are not the global ones
    y = torch.randint(0, 10, (2 * b,), generator=g)
    mine = slice(r * b, (r + 1) * b)
    shape = SimpleNamespace(num_classes=10, channels=3, image_size=8)
    info: dict[str, Any] = {}
    for setting in ("on", "off"):
        cfg = load_config(None, [*argv, "model.dropout=0", f"model.sync_bn={setting}"])
        torch.manual_seed(0)
        (net,) = build_networks(cfg, TCL, shape, acc.num_processes, acc.device.type).values()
        torch.manual_seed(0)
        (reference,) = build_networks(cfg, TCL, shape, 1).values()  # one process: plain BatchNorm
        info[f"sync_{setting}_layers"] = sorted({type(m).__name__ for m in net.modules() if "Norm" in type(m).__name__})
        ddp = acc.prepare(net)
        out = ddp(x[mine])
        # + 0 * proj: DDP requires every parameter in the graph
        acc.backward(torch.nn.functional.cross_entropy(out.logits, y[mine]) + 0 * out.proj.sum())
        ref = reference(x)
        (torch.nn.functional.cross_entropy(ref.logits, y) + 0 * ref.proj.sum()).backward()
        info[f"sync_{setting}_stats_rel_diff"] = _rel(_bn_stats(acc.unwrap_model(ddp)), _bn_stats(reference))
        info[f"sync_{setting}_grad_rel_diff"] = _global_rel([p.grad for p in ddp.parameters()],
                                                     [p.grad for p in reference.parameters()])
        info[f"sync_{setting}_first_running_mean"] = _bn_stats(acc.unwrap_model(ddp))[0].tolist()
    return info


def main() -> None:
    cfg = load_config(None, sys.argv[1:])
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_cfg = load_config(None, [*sys.argv[1:], "model.norm=group", "model.dropout=0"])
    acc = trainer._make_accelerator(cfg)
    info = {"num_processes": acc.num_processes, "process_index": acc.process_index, "backend": str(acc.state.backend)}
    info.update(contrastive_check(acc, check_cfg))
    info.update(exact_mode_check(acc, check_cfg, out))
    info.update(sync_bn_check(acc, sys.argv[1:]))

    methods: list[TCL] = []

    class Recording(TCL):
        def __init__(self, ctx: TrainContext) -> None:
            super().__init__(ctx)
            methods.append(self)

    original = trainer.get_method
    trainer.get_method = lambda name: Recording if name == "tcl" else original(name)
    trainer.train(cfg)
    m = methods[0]
    save_file({k: getattr(m, k).cpu().contiguous() for k in ("clean_probability", "prototypes", "corrected_label")},
              str(out / f"rank{info['process_index']}_tcl.safetensors"))
    info["detections"] = m.detections
    info["trained_norms"] = sorted({type(x).__name__ for x in m.ctx.unwrapped_model().modules()
                                    if "Norm" in type(x).__name__})
    (out / f"rank{info['process_index']}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
