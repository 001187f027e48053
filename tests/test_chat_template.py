"""`TextTokenizer.apply_chat_template` takes transformers' arguments with transformers' defaults
and gives what transformers' `apply_chat_template` gives on the same tokenizer files (token ids
in a dict by default, the id list, the text, the generation prompt, a continued final message,
a batch, extra template variables, a template passed in)."""

from __future__ import annotations

import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.io.tokenizer import TextTokenizer

CHAT = [{"role": "system", "content": "give only the final answer"},
        {"role": "user", "content": "what is 2 and 3"}, {"role": "assistant", "content": "5"}]
TEMPLATE_WITH_VARIABLE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{% if flag %}!{% endif %}\n{% endfor %}")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    ours = chatml_tokenizer()
    assert isinstance(ours, TextTokenizer)
    directory = tmp_path_factory.mktemp("chatml")
    ours.save(str(directory))
    return ours, AutoTokenizer.from_pretrained(str(directory))


def _plain(out):
    return {k: list(v) for k, v in out.items()} if hasattr(out, "keys") else out


@pytest.mark.parametrize("conversation", [CHAT[:2], CHAT, [CHAT[:2], CHAT]],
                         ids=["prompt", "answered", "batch"])
@pytest.mark.parametrize("kwargs", [
    {}, {"add_generation_prompt": True}, {"tokenize": False},
    {"tokenize": False, "add_generation_prompt": True}, {"return_dict": False},
    {"continue_final_message": True}, {"continue_final_message": True, "tokenize": False},
    {"chat_template": TEMPLATE_WITH_VARIABLE, "flag": True, "tokenize": False},
], ids=repr)
def test_matches_transformers(tokenizers, conversation, kwargs):
    ours, reference = tokenizers
    want = reference.apply_chat_template(conversation, **kwargs)
    assert _plain(ours.apply_chat_template(conversation, **kwargs)) == _plain(want)


def test_default_is_token_ids(tokenizers):
    ours, _ = tokenizers
    out = ours.apply_chat_template(CHAT[:2])
    text = ours.apply_chat_template(CHAT[:2], tokenize=False)
    assert out == {"input_ids": ours.encode(text), "attention_mask": [1] * len(out["input_ids"])}
    with pytest.raises(ValueError, match="not compatible"):
        ours.apply_chat_template(CHAT, add_generation_prompt=True, continue_final_message=True)
