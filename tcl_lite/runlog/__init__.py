"""What a running job writes for humans and tools: the progress line, train.log, metrics.jsonl,
status.json, the experiment trackers and the ETA."""
