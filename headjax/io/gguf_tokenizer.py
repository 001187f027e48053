"""A `tokenizers.Tokenizer` rebuilt from the `tokenizer.ggml.*` metadata of a GGUF file.

Two vocabularies, the ones transformers' GGUF integration reads for the same architectures:
- `gpt2`: byte-level BPE with the file's merges, split as `tokenizer.ggml.pre` names.
- `llama` on a Gemma architecture: SentencePiece pieces ("▁" for a space) with byte fallback.
  Gemma files list no merges; they are derived from the vocabulary, ranked by the order the
  pieces appear in the file (Gemma's scores do not follow its merge order), and a piece of two or
  more spaces, stored as spaces, is respelled with "▁". The whole text is one pre-token.
Tokens marked control become special tokens, those marked user-defined plain added tokens (both
matched whole in the text). Gemma files carry no chat template; `GEMMA_CHAT_TEMPLATE` writes
Gemma's turn format and `<end_of_turn>` stops generation.
"""

from __future__ import annotations

from collections.abc import Sequence

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from headjax.io.gguf import field

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` values whose merges were learned on a split other than GPT-2's; any other
# value gets GPT-2's byte-level split (as transformers does).
GGUF_PRE_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT,
                   "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
                   "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}
GGUF_CONTROL, GGUF_USER_DEFINED = 3, 4
# Architectures whose `llama` (SentencePiece) vocabulary is Gemma's.
GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3"})
SPACE = "\u2581"

# Gemma's turn format: <bos>, then per turn "<start_of_turn>{user|model}\n{content}<end_of_turn>\n"
# with contents trimmed; a system message opens the first user turn, followed by a blank line.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 is even) -%}"
    "{{ raise_exception('Gemma turns alternate user/assistant, starting with user') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (system if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], pre: str | None
                   ) -> tuple[Tokenizer, dict[str, int], set[str]]:
    """(byte-level BPE tokenizer, its vocabulary, the byte alphabet) of a `gpt2` vocabulary."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode())): i
             for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                                     fuse_unk=False, byte_fallback=False))
    split = GGUF_PRE_SPLITS.get(pre)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True) if split is None
        else pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, vocab, alphabet


def ordered_merges(pieces: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges implied by a vocabulary listed best-first: every split of a piece into two
    pieces of the vocabulary, ranked by the piece's position, longer left part first."""
    vocab = set(pieces)
    return [(piece[:k], piece[k:]) for piece in dict.fromkeys(pieces)
            for k in range(len(piece) - 1, 0, -1)
            if piece[:k] in vocab and piece[k:] in vocab]


def gemma_bpe(tokens: Sequence[str], unk_token: str) -> tuple[Tokenizer, dict[str, int]]:
    """(tokenizer, vocabulary) of Gemma's SentencePiece vocabulary: spaces become "▁", merges
    from the vocabulary order, byte fallback to the `<0xXX>` pieces."""
    pieces = [SPACE * len(t) if t and not t.strip(" ") else t for t in tokens]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=ordered_merges(pieces),
                                     unk_token=unk_token, fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                           decoders.Fuse()])
    return tokenizer, vocab


def add_listed_tokens(tokenizer: Tokenizer, tokens: Sequence[str], types: Sequence[int],
                      vocab: dict[str, int], alphabet: set[str] | None = None) -> None:
    """Control tokens as special tokens, user-defined ones in `vocab` as plain added tokens.

    `alphabet` (byte-level vocabularies): a control token spelled outside it is a mislabel in
    the file and is skipped, as adding it would grow the vocabulary past the model's.
    """
    tokenizer.add_special_tokens([
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types, strict=True)
        if kind == GGUF_CONTROL and (alphabet is None or set(t) <= alphabet)])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False)
                          for t, kind in zip(tokens, types, strict=True)
                          if kind == GGUF_USER_DEFINED and t in vocab])


def gguf_tokenizer(reader: GGUFReader, *, source: str) -> tuple[Tokenizer, dict]:
    """(tokenizer, `TextTokenizer` keyword arguments: special tokens, chat template, stop
    tokens) from the metadata of `reader`; unsupported or missing fields raise naming `source`."""
    kind = field(reader, "tokenizer.ggml.model")
    arch = field(reader, "general.architecture")
    gemma = kind == "llama" and arch in GEMMA_ARCHITECTURES
    if kind != "gpt2" and not gemma:
        raise ValueError(
            f"{source}: metadata 'tokenizer.ggml.model': tokenizer {kind!r} of architecture "
            f"{arch!r} is not supported (supported: 'gpt2' byte-level BPE, 'llama' SentencePiece "
            f"of {sorted(GEMMA_ARCHITECTURES)})")
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = field(reader, "tokenizer.ggml.merges")
    if tokens is None or (merges is None and not gemma):
        raise ValueError(f"{source}: metadata 'tokenizer.ggml.tokens'/'merges' missing")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)

    def special(key: str) -> str | None:
        token_id = field(reader, f"tokenizer.ggml.{key}")
        return None if token_id is None else tokens[token_id]

    if special("eos_token_id") is None:
        raise ValueError(f"{source}: metadata 'tokenizer.ggml.eos_token_id' missing")
    specials = {"eos_token": special("eos_token_id"), "pad_token": special("padding_token_id"),
                "bos_token": special("bos_token_id"), "unk_token": special("unknown_token_id")}
    template = field(reader, "tokenizer.chat_template")
    if gemma:
        tokenizer, vocab = gemma_bpe(tokens, specials["unk_token"] or "<unk>")
        add_listed_tokens(tokenizer, tokens, types, vocab)
        stops = ("<end_of_turn>",) if "<end_of_turn>" in vocab else ()
        return tokenizer, dict(specials, chat_template=template or GEMMA_CHAT_TEMPLATE,
                               stop_tokens=stops)
    tokenizer, vocab, alphabet = byte_level_bpe(tokens, merges,
                                                field(reader, "tokenizer.ggml.pre"))
    add_listed_tokens(tokenizer, tokens, types, vocab, alphabet)
    return tokenizer, dict(specials, chat_template=template)
