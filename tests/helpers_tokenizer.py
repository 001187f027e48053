"""A hermetic ChatML tokenizer for data tests: word-level vocabulary, no downloads.

Words and single punctuation marks are tokens; `<|im_start|>`, `<|im_end|>` and `<|endoftext|>`
are special tokens. `wrap` puts it in `headjax.io.tokenizer.TextTokenizer` when that module is
present, else in `MiniTokenizer`, a small object with the same interface (encode, decode,
apply_chat_template, special token ids).
"""

from __future__ import annotations

import string

import jinja2
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORDS = ("user", "assistant", "system", "give", "only", "the", "final", "answer", "calculate",
         "what", "is", "how", "many", "legs", "sort", "these", "words", "spell", "backward", "yes",
         "no", "a", "an", "of", "and", "in", "to")


def _vocab(extra_words: tuple[str, ...]) -> dict[str, int]:
    pieces = list(SPECIALS) + ["[UNK]", "\n"] + list(string.digits) + list(string.punctuation)
    pieces += [w for w in (*WORDS, *extra_words) if w not in pieces]
    pieces += [c for c in string.ascii_lowercase if c not in pieces]
    return {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}


def raw_tokenizer(extra_words: tuple[str, ...] = ()) -> Tokenizer:
    """A word-level `tokenizers.Tokenizer`; digits are split into single tokens."""
    tok = Tokenizer(models.WordLevel(_vocab(extra_words), unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation(),
        pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIALS))
    return tok


class MiniTokenizer:
    """The `TextTokenizer` interface over a `tokenizers.Tokenizer` and a Jinja chat template."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.eos_token_id = tokenizer.token_to_id("<|im_end|>")
        self.pad_token_id = tokenizer.token_to_id("<|endoftext|>")
        self.bos_token_id = None
        self.stop_token_ids = (self.eos_token_id, self.pad_token_id)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                            tokenize: bool = True):
        text = jinja2.Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt)
        return {"input_ids": self.encode(text)} if tokenize else text


def wrap(tokenizer: Tokenizer, chat_template: str):
    """`tokenizer` with `chat_template`, EOS `<|im_end|>` and pad `<|endoftext|>`."""
    try:
        from headjax.io.tokenizer import TextTokenizer
    except ImportError:
        return MiniTokenizer(tokenizer, chat_template)
    return TextTokenizer(tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         chat_template=chat_template, stop_tokens=("<|endoftext|>",))


def chatml_tokenizer(extra_words: tuple[str, ...] = ()):
    """The test tokenizer (vocabulary < 128 + len(extra_words) so it fits the `tiny` model)."""
    return wrap(raw_tokenizer(extra_words), CHATML_TEMPLATE)
