"""``tcl-lite plan``: a run's memory and time on any GPU, predicted on the CPU by tracing its steps under fake
tensors (``runs.RunTracer``), judged per GPU (``fit``), printed by ``command``. The engine asks
``planner.resolve_micro_batches`` for ``train.gradient_accumulation_steps=auto``.

Nothing is imported here: ``tcl-lite plan --help`` must answer before torch is loaded."""
