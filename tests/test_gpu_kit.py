"""The GPU self-check kit (bench/gpu_check.py) on the CPU: its fallback, and every check function that
means something without CUDA, on real (tiny) models, real bitsandbytes and the real digits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, run_env

sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402 - bench/ is not a package
import gpu_checks  # noqa: E402
import gpu_probes  # noqa: E402


def test_cpu_fallback_marks_every_row_not_run_and_exits_0(tmp_path):
    env = dict(run_env(), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "No CUDA device here" in proc.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    planned = gpu_check.planned_rows(gpu_check.sizes(toy=False))
    assert [r["check"] for r in report["rows"]] == [r.check for r in planned]
    assert {r["section"] for r in report["rows"]} == set(gpu_checks.SECTIONS)
    assert all(r["status"] == "not run" and r["notes"] == "no CUDA device" for r in report["rows"])
    assert report["failed"] == 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("| not run |") == len(planned)


def test_gradient_cache_exact_in_fp32_and_within_rounding_in_bf16():
    shape = {"arch": "tiny_cnn", "width": 8, "image_size": 8, "batch": 32, "micro": 4, "cpu": True}
    fp32 = gpu_probes.cache_exactness("no", **shape)
    assert fp32["micro_batches"] == 8 and fp32["finite"]
    assert fp32["loss_rel"] < 1e-6 and fp32["grad_rel"] < 1e-5  # exact: only float summation order differs
    bf16 = gpu_probes.cache_exactness("bf16", **shape)
    assert bf16["finite"] and bf16["rounding_grad_rel"] > 1e-4  # bf16 really rounded the single batch
    assert bf16["grad_rel"] < 2 * bf16["rounding_grad_rel"] + 1e-3
    assert gpu_probes.exactness_ok(bf16)
    # A cache that added its own error (or a non-finite gradient) fails the criterion.
    assert not gpu_probes.exactness_ok({**bf16, "grad_rel": 3 * bf16["rounding_grad_rel"] + 1e-3})
    assert not gpu_probes.exactness_ok({**bf16, "finite": False})


def test_fp16_cast_of_the_cached_gradient_is_measured():
    r = gpu_probes.cached_gradient_fp16_cast(arch="tiny_cnn", width=8, image_size=8, batch=64, micro=8)
    assert r["entries"] == 6 * 64 * (10 + 256)  # 6 views x B samples x (logits + projection)
    assert 0 < r["nonzero"] < r["entries"]  # the weak view's outputs only feed normalisation: zero gradient
    assert 0 < r["cast_rel"] < 1e-3 and 0 <= r["flushed_share"] < 0.01 and 0 <= r["subnormal_share"] <= 1


def test_rel_diff():
    a, b = [torch.tensor([3.0, 0.0]), torch.tensor([0.0])], [torch.tensor([0.0, 0.0]), torch.tensor([4.0])]
    assert gpu_probes.rel_diff(a, b) == pytest.approx(5.0 / 4.0)
    assert gpu_probes.rel_diff(b, b) == 0.0


@pytest.mark.parametrize("name", ["sgd8bit", "adamw8bit"])
def test_bitsandbytes_8bit_optimizer_check_on_cpu(name):
    r = gpu_probes.optimizer_8bit(name, torch.device("cpu"))
    assert r["is_bitsandbytes"] and r["optimizer"].startswith("bitsandbytes.optim")
    assert "uint8" in r["state_dtypes"]
    assert r["loss_last"] < 0.5 * r["loss_first"]
    assert abs(r["loss_last"] - r["loss_last_32bit"]) < 0.05  # 8-bit state trains like 32-bit here
    assert r["state_mib"] < 0.35 * r["state_mib_32bit"]
    assert gpu_probes.optimizer_8bit_ok(r)
    assert not gpu_probes.optimizer_8bit_ok({**r, "is_bitsandbytes": False})


def test_fit_arithmetic_from_given_numbers():
    v = gpu_probes.fit_verdict(peak_allocated_mib=9000, reserved_peak_mib=9800, context_mib=400, extras_mib=51,
                               budget_mib=15360)
    assert v["required_mib"] == 400 + 9800 + 51 and v["headroom_mib"] == 15360 - 10251
    assert v["fits"] and v["verdict"] == "fits"
    # The allocator's reserve is never below what was allocated: the larger one counts.
    assert gpu_probes.fit_verdict(peak_allocated_mib=9000, reserved_peak_mib=0, context_mib=0)["required_mib"] == 9000
    tight = gpu_probes.fit_verdict(peak_allocated_mib=14000, reserved_peak_mib=14600, context_mib=400)
    assert tight["fits"] and tight["verdict"] == "tight"  # 360 MiB left: under 5% of 15 GiB
    over = gpu_probes.fit_verdict(peak_allocated_mib=14000, reserved_peak_mib=15000, context_mib=400)
    assert not over["fits"] and over["verdict"] == "does not fit" and over["headroom_mib"] == -40
    assert gpu_probes.T4_BUDGET_MIB == 15360
    assert gpu_probes.detection_bank_mib(50_000, 256, 10) == pytest.approx(50_000 * 270 * 4 / 2**20)


def test_notebook_t4_settings_come_from_the_plan_and_load():
    from tcl_lite.config import load_config

    label, overrides = gpu_checks.notebook_device_settings(("Tesla T4", 15.0, 7.5))
    assert label.startswith("T4")
    assert "train.mixed_precision=fp16" in overrides  # no bf16 on a T4
    cfg = load_config(ROOT / "configs" / "cifar10_tcl.yaml", overrides)
    assert cfg.train.batch_size == 256 and 256 % cfg.train.gradient_accumulation_steps == 0
    exact = load_config(ROOT / "configs" / "cifar10_tcl_1gpu_exact.yaml")
    assert (exact.train.batch_size, exact.train.gradient_accumulation_steps) == (1024, 8)


def test_loader_throughput_on_the_digits_with_tcl_views():
    from tcl_lite.config import load_config
    from tcl_lite.data import build_data
    from tcl_lite.methods.tcl.method import TCL

    per_sample = build_data(load_config(None, ["data.image_size=8", "data.augment_on=workers"]).data, 0)
    r = gpu_probes.loader_throughput(per_sample.train_views(TCL.views), batch_size=64, num_workers=2, batches=3)
    assert r["samples"] == 3 * 64 and r["views"] == 3 and r["image_shape"] == [3, 8, 8] and r["workers"] == 2
    assert r["seconds"] > 0 and r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"])
    # data.augment_on=device: workers only decode, the views come from finish_batch on the device.
    batched = build_data(load_config(None, ["data.image_size=8", "data.augment_on=device"]).data, 0)
    views = batched.train_views(TCL.views, "cpu")
    r = gpu_probes.loader_throughput(views, batch_size=64, num_workers=2, batches=3, device="cpu")
    assert r["samples"] == 3 * 64 and r["views"] == 3 and r["image_shape"] == [3, 8, 8]


def test_starvation_verdict():
    slow = gpu_probes.starvation_verdict(500.0, 2000.0)
    assert slow["starved"] and slow["gpu_busy_bound"] == 0.25
    assert "data.augment_on=device" in slow["fix"] and "data.cache_decoded=on" in slow["fix"]
    in_memory = gpu_probes.starvation_verdict(500.0, 2000.0, in_memory=True)
    assert "data.augment_on=device" in in_memory["fix"] and "cache_decoded" not in in_memory["fix"]
    decoding = gpu_probes.starvation_verdict(500.0, 2000.0, on_device=True)
    assert decoding["fix"].startswith("JPEG decoding") and "data.cache_decoded=on" in decoding["fix"]
    fast = gpu_probes.starvation_verdict(3000.0, 2000.0, on_device=True, in_memory=True)
    assert not fast["starved"] and fast["gpu_busy_bound"] == 1.0


def test_table_json_and_exit_status(tmp_path):
    rows = [gpu_checks.Row("exactness", "gradient cache, bf16", "B=8", "pass", "grad 1e-3", "criterion"),
            gpu_checks.Row("memory", "TCL step naive", "B=8", "measured", "peak 1 MiB"),
            gpu_checks.Row("throughput", "DIVIDEMIX training step", "B=8", "not available")]
    table = gpu_check.format_table(rows).splitlines()
    assert table[0] == "| section | check | setting | status | figures | notes |"
    assert table[2] == "| exactness | gradient cache, bf16 | B=8 | pass | grad 1e-3 | criterion |"
    assert len(table) == 2 + len(rows)
    assert gpu_check.exit_code(rows) == 0
    rows.append(gpu_checks.Row("resume", "kill -9 and --resume", "x", "fail", notes="no resume line"))
    assert gpu_check.exit_code(rows) == 1
    js, md = gpu_check.write_outputs(rows, tmp_path, "machine line")
    report = json.loads(js.read_text())
    assert report["failed"] == 1 and report["header"] == "machine line"
    assert report["rows"][3] == {"section": "resume", "check": "kill -9 and --resume", "setting": "x",
                                 "status": "fail", "figures": "", "notes": "no resume line"}
    assert "| resume | kill -9 and --resume | x | fail |  | no resume line |" in md.read_text()


def test_resolve_cifar_finds_a_folder_and_rejects_a_wrong_path(tmp_path):
    root = tmp_path / "cifar10-jpeg"
    (root / "train" / "cat").mkdir(parents=True)
    (root / "test" / "cat").mkdir(parents=True)
    assert gpu_check.resolve_cifar(str(tmp_path), tmp_path / "scratch") == root
    assert gpu_check.resolve_cifar(str(root), tmp_path / "scratch") == root
    with pytest.raises(SystemExit, match="not a CIFAR-10 image folder"):
        gpu_check.resolve_cifar(str(tmp_path / "cifar10-jpeg" / "train"), tmp_path / "scratch")


def test_kill_and_resume_continues_a_real_run(tmp_path):
    # CE on the digits, 39 steps per epoch, a checkpoint every 5: SIGKILLed at step 45 (epoch 2), resumed.
    args = ["data.image_size=8", "model.width=8", "train.batch_size=32", "train.epochs=2",
            "checkpoint.every_steps=5", "train.log_every=1000"]
    r = gpu_probes.kill_and_resume(args, tmp_path / "run", kill_at_step=44, timeout=240, env=run_env())
    assert r["killed"] and r["killed_at_step"] >= 44 and r["epochs_before_kill"] == [1]
    assert f"global step {r['killed_at_step']})" in r["resumed_line"]
    assert r["epochs"] == [1, 2] and r["steps"] == [39, 78] and r["second_rc"] == 0
    assert gpu_probes.resume_ok(r, epochs=2)
    assert not gpu_probes.resume_ok({**r, "resumed_line": ""}, epochs=2)  # a restart from scratch fails
    assert not gpu_probes.resume_ok(r, epochs=3)  # stopped short of the last epoch


def test_reproduce_table_upserts_rows_in_place():
    import gpu_reproduce as gr

    text = f"# Benchmarks\n\n## GPU\n\n{gr.START}\n{gr.END}\n\n## after\n"
    a = ["tcl_sym50_e200", "tcl", "p", "10 / 200", "50.00", "51.00", "0.9000", "1.00", "H100", "t1"]
    b = ["ce_sym50_e200", "ce", "p", "200 / 200", "60.00", "61.00", "-", "2.00", "H100", "t1"]
    once = gr.upsert_rows(text, [a, b])
    assert once.count("| tcl_sym50_e200 |") == 1 and once.endswith("\n\n## after\n")
    assert once.index("| run | method |") < once.index("| tcl_sym50_e200 |") < once.index("| ce_sym50_e200 |")
    a2 = [*a[:3], "200 / 200", "85.00", *a[5:]]
    twice = gr.upsert_rows(once, [a2])
    assert twice.count("| tcl_sym50_e200 |") == 1 and "| 200 / 200 | 85.00 |" in twice and "| 10 / 200 |" not in twice
    assert twice.index("| tcl_sym50_e200 |") < twice.index("| ce_sym50_e200 |")  # updated in place, order kept
    assert gr.upsert_rows(twice, [a2]) == twice  # idempotent
    appended = gr.upsert_rows("# no markers\n", [b])
    assert appended.startswith("# no markers\n\n" + gr.START) and "| ce_sym50_e200 |" in appended


def test_reproduce_training_hours_sum_sessions():
    import gpu_reproduce as gr

    # Two sessions: the recorded time restarts at the second one.
    metrics = [{"time": 1800.0}, {"time": 3600.0}, {"time": 1800.0}, {"time": 5400.0}]
    assert gr.training_hours(metrics) == pytest.approx(2.5)


def test_plan_section_compares_the_prediction_with_a_measured_step_on_the_cpu(tmp_path):
    """``--allow-cpu --toy``: the plan rows measure a step of each preset (tiny model) and set the
    prediction beside it; fp16 presets are left to a GPU."""
    ctx = type("Ctx", (), dict(cuda=False, sizes=gpu_check.sizes(toy=True), device=None, results={},
                               args=type("Args", (), dict(toy=True))()))()
    rows = [r for r in gpu_check.planned_rows(ctx.sizes) if r.section == "plan"]
    assert [r.setting.split()[0] for r in rows] == list(gpu_checks.CALIBRATION_PRESETS)
    gpu_checks.run_section("plan", rows[:2] + [rows[2]], ctx)  # cifar10_ce, cifar10_tcl, the fp16 preset
    for row in rows[:2]:
        assert row.status == "measured", row.notes
        r = ctx.results["plan"][row.setting.split()[0]]
        assert abs(r["predicted_mib"] / r["allocated_mib"] - 1) <= 0.15 and r["achieved_tflops"] > 0
    assert rows[2].status == "not run" and "CUDA" in rows[2].notes
