"""TCL on two real gloo processes: global contrastive negatives, gradient scale, identical detection state,
BatchNorm synchronised across the processes (``model.sync_bn``)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import ROOT, TINY
from safetensors.torch import load_file
from test_distributed import launch_two

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")


def test_two_processes_global_contrastive_loss_and_identical_detection(tmp_path, fresh_accelerate):
    out = tmp_path / "ddp_tcl"
    launch_two(str(ROOT / "tests" / "dist_tcl.py"), *TINY, "method=tcl", "train.epochs=1", "train.batch_size=16",
               "train.gradient_accumulation_steps=2", "tcl.warmup_epochs=0", "model.proj_dim=32", f"output_dir={out}")
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["num_processes"] for i in infos] == [2, 2] and "gloo" in infos[0]["backend"]
    for info in infos:
        # negatives from both ranks: the loss of the global batch, not of the local half
        assert info["loss"] == pytest.approx(info["ref_loss"], rel=1e-5)
        assert abs(info["local_loss"] - info["ref_loss"]) > 0.1
        # all_gather's backward sums over ranks (x2), DDP averages (/2): exactly the global gradient
        assert info["grad_rel_diff"] < 1e-4, info["grad_rel_diff"]
        # exact mode under DDP: micro_batches=2 (gradient cache, gather inside the cached loss) == 1
        assert info["exact_grad_rel_diff"] < 1e-4, info["exact_grad_rel_diff"]
        assert info["exact_contrastive"][0] == pytest.approx(info["exact_contrastive"][1], rel=1e-5)
        assert info["detections"] == 2  # before training and after the epoch
        assert info["trained_norms"] == ["AllReduceBatchNorm"]  # model.sync_bn=auto: on for TCL, as its reference
        # model.sync_bn=on: BatchNorm over both ranks' halves == one process on the whole batch (statistics
        # and the averaged gradient); off: each rank's own half (other statistics, another gradient)
        assert info["sync_on_layers"] == ["AllReduceBatchNorm"]
        assert info["sync_off_layers"] == ["BatchNorm1d", "BatchNorm2d"]
        assert info["sync_on_stats_rel_diff"] < 1e-5, info["sync_on_stats_rel_diff"]
        assert info["sync_on_grad_rel_diff"] < 1e-4, info["sync_on_grad_rel_diff"]
        assert info["sync_off_stats_rel_diff"] > 1e-2 and info["sync_off_grad_rel_diff"] > 1e-3
    assert infos[0]["sync_on_first_running_mean"] == infos[1]["sync_on_first_running_mean"]
    assert infos[0]["sync_off_first_running_mean"] != infos[1]["sync_off_first_running_mean"]

    s0, s1 = (load_file(str(out / f"rank{r}_tcl.safetensors")) for r in (0, 1))
    for key in s0:
        assert torch.equal(s0[key], s1[key]), key

    # the sharded pass found what one process finds on the same weights
    from accelerate import Accelerator

    from tcl_lite.algorithms.gmm_detector import detection_pass
    from tcl_lite.config import load_config
    from tcl_lite.data import build_data
    from tcl_lite.models.network import build_model

    cfg = load_config(out / "config.yaml")
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.num_classes, in_channels=3, image_size=cfg.data.image_size,
                        with_projector=True)
    ckpt = sorted((out / "checkpoints").glob("step_*"))[-1]
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    acc = Accelerator(cpu=True)
    loader = acc.prepare_data_loader(torch.utils.data.DataLoader(data.train_eval(), batch_size=512))
    single = detection_pass(acc, model, loader, torch.as_tensor(data.noisy_labels), data.num_classes)
    assert torch.allclose(single.prototypes, s0["prototypes"], atol=1e-4)
    assert torch.allclose(single.clean_probability, s0["clean_probability"], atol=1e-3)
    assert torch.equal(single.predictions, s0["corrected_label"])
