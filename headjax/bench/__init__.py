"""Benchmarks of headjax against transformers PyTorch on SmolLM2-135M (`scripts/benchmark.py`)."""
