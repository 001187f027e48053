"""The paper's experiments on a real model: its three findings and its SFT improvements against
their baselines, as a resumable grid that writes docs/reproduction.md (`scripts/reproduce.py`)."""
