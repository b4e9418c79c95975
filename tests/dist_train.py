"""Launched by tests/test_distributed.py under `accelerate launch`: trains, then every process
writes its own copy of the weights and what it saw, so the test can compare the ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from tcl_lite.config import load_config
from tcl_lite.engine import trainer
from tcl_lite.methods import build as method_build


def main() -> None:
    cfg = load_config(None, sys.argv[1:])
    seen: list[int] = []
    original = trainer._step_adapting_to_oom

    def recording_step(run, batch, info):  # records which samples this process trained on
        first = batch if "index" in batch else next(iter(batch.values()))  # a phase of several loaders
        seen.extend(first["index"].tolist())
        return original(run, batch, info)

    trainer._step_adapting_to_oom = recording_step
    captured = {}
    original_make = trainer._make_accelerator

    def make(cfg_):
        captured["acc"] = original_make(cfg_)
        return captured["acc"]

    trainer._make_accelerator = make
    original_build = method_build.build_model

    def build(*args, **kwargs):  # keeps the initial weights, to show that training moved them
        model = original_build(*args, **kwargs)
        captured["init"] = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
        return model

    method_build.build_model = build  # where the engine's networks are built (build_networks)
    trainer.train(cfg)
    acc = captured["acc"]
    model = acc.unwrap_model(acc._models[0])
    out = Path(cfg.output_dir)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / f"rank{acc.process_index}.safetensors"))
    every = {f"{i}.{k}": v.contiguous() for i, m in enumerate(acc._models)
             for k, v in acc.unwrap_model(m).state_dict().items()}  # all networks (e.g. DivideMix's two)
    save_file(every, str(out / f"rank{acc.process_index}_all.safetensors"))
    save_file(captured["init"], str(out / f"init{acc.process_index}.safetensors"))
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(
        {"num_processes": acc.num_processes, "process_index": acc.process_index,
         "backend": str(acc.state.backend), "seen": seen}))


if __name__ == "__main__":
    main()
