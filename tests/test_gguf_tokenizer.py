"""Gemma's SentencePiece vocabulary read from a tiny GGUF file, against transformers' GGUF
tokenizer on the same file; the chat template; unsupported vocabularies."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from headjax.io.tokenizer import TextTokenizer

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
USER_DEFINED = ["\n", "\n\n", "  ", "   "]
# "xy" is listed before "yz" but scores lower: Gemma merges follow the listing, not the scores.
PIECES = ["▁", "t", "h", "e", "a", "n", "d", "o", "r", "l", "w", "x", "y", "z", "1", "2", "ü",
          "▁t", "he", "▁the", "an", "▁an", "nd", "and", "▁and", "or", "▁w", "ld", "orld",
          "▁world", "12", "xy", "yz"]
TEXTS = ["the world and  andor", "  the\n\n12 über xyz", "<start_of_turn>the<end_of_turn>\n",
         "zq€ 日本", "\n\n\n   x  ", "1212 12"]


def write_gemma_gguf(path: str, architecture: str = "gemma3") -> None:
    """A tensor-less-but-one GGUF with a Gemma-style `llama` vocabulary: control tokens, spaces
    and newlines as user-defined tokens, the 256 byte pieces, then pieces listed best-first."""
    tokens = SPECIALS + USER_DEFINED + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    types = [3] * len(SPECIALS) + [4] * len(USER_DEFINED) + [6] * 256 + [1] * len(PIECES)
    scores = [-1000.0] * (len(SPECIALS) + len(USER_DEFINED)) + [0.0] * 256 + [
        -float(i) for i in range(len(PIECES))]
    scores[tokens.index("yz")] = -0.5
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_key_length(4)
    writer.add_value_length(4)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_space_prefix(False)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma_vocab")
    write_gemma_gguf(str(directory / "tiny.gguf"))
    return str(directory), "tiny.gguf"


def test_gemma_vocabulary_matches_transformers(gemma_file):
    transformers = pytest.importorskip("transformers")
    directory, filename = gemma_file
    ours = TextTokenizer.from_gguf(f"{directory}/{filename}")
    reference = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert ours.encode("xyz") == [ours.tokenizer.token_to_id(t) for t in ("xy", "z")]
    assert ours.encode("€")[0] == ours.tokenizer.token_to_id("<0xE2>")
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (
        "<bos>", "<eos>", "<pad>", "<unk>")
    assert ours.stop_token_ids == (1, SPECIALS.index("<end_of_turn>"))
    assert ours.vocab_size == len(reference)


def test_gemma_chat_template(gemma_file):
    directory, filename = gemma_file
    ours = TextTokenizer.from_gguf(f"{directory}/{filename}")
    messages = [{"role": "system", "content": "Be brief. "},
                {"role": "user", "content": " Hi"}, {"role": "assistant", "content": "Hello\n"},
                {"role": "user", "content": "Bye"}]
    assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    assert ours.apply_chat_template(messages[1:2], add_generation_prompt=False, tokenize=False) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n")
    with pytest.raises(Exception, match="alternate"):
        ours.apply_chat_template(messages[1:2] * 2, add_generation_prompt=True, tokenize=False)


def test_sentencepiece_vocabulary_of_other_architectures_is_refused(tmp_path):
    path = str(tmp_path / "llama_spm.gguf")
    write_gemma_gguf(path, architecture="llama")
    with pytest.raises(ValueError, match=r"llama_spm.gguf: metadata 'tokenizer.ggml.model': "
                                         r"tokenizer 'llama' of architecture 'llama'"):
        TextTokenizer.from_gguf(path)


def test_gemma_vocabulary_saves_as_a_transformers_tokenizer(gemma_file, tmp_path):
    transformers = pytest.importorskip("transformers")
    directory, filename = gemma_file
    ours = TextTokenizer.from_gguf(f"{directory}/{filename}")
    ours.save(str(tmp_path))
    reloaded = TextTokenizer.from_hf_dir(str(tmp_path))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert reloaded.stop_token_ids == ours.stop_token_ids == (1, SPECIALS.index("<end_of_turn>"))
    messages = [{"role": "user", "content": "the world"}]
    assert reloaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    for text in TEXTS:
        ids = ours.encode(text)
        assert reloaded.encode(text) == ids
        assert reference(text, add_special_tokens=False)["input_ids"] == ids
        assert reference.decode(ids, skip_special_tokens=True) == ours.decode(ids)
