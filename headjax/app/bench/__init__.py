"""Benchmarks (`scripts/benchmark.py`): headjax against transformers PyTorch on SmolLM2-135M's
architecture on a CPU (`sections`, `paired`), and a Llama-class bf16 SFT step with the head
patterns' cost on an accelerator (`accelerator`)."""
