"""Benchmark helpers beyond the in-process throughput run: side by side with `yolo track`,
capture-to-overlay latency and memory soak on live streams."""
