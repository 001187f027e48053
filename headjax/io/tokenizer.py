"""`TextTokenizer`: a `tokenizers.Tokenizer` plus special tokens and a Jinja chat template.

Loads from a `tokenizer.json`, a Hugging Face directory, or the `tokenizer.ggml.*` metadata of a
GGUF file (`headjax.io.gguf_tokenizer`: byte-level BPE or Gemma's SentencePiece vocabulary).
Chat templates render with jinja2 exactly as transformers renders them (sandboxed environment,
`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`, special tokens as variables).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox
from gguf import GGUFReader
from tokenizers import Tokenizer

from headjax.io.gguf import read_gguf
from headjax.io.gguf_tokenizer import gguf_tokenizer


def _template_environment() -> jinja2.Environment:
    """The sandboxed jinja2 environment transformers renders chat templates in."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _render(template: jinja2.Template, chat: list[dict], continue_final_message: bool,
            variables: dict) -> str:
    """One conversation rendered; with `continue_final_message` the text is cut right after the
    last message's content, as transformers cuts it (the content is tagged, then cut at the
    tag)."""
    if not continue_final_message:
        return template.render(messages=chat, **variables)
    if not chat or not isinstance(chat[-1].get("content"), str):
        raise ValueError("apply_chat_template: continue_final_message needs a final message "
                         "with text content")
    chat = [*chat[:-1], {**chat[-1], "content": chat[-1]["content"] + _CONTINUE_TAG}]
    text = template.render(messages=chat, **variables)
    at = text.rfind(_CONTINUE_TAG.strip())
    if at < 0:
        raise ValueError("apply_chat_template: the chat template drops the final message")
    return text[:at] if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _read_tokenizer_json(path: str) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a tokenizer.json; a missing or bad file raises naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"{path}: not a readable tokenizer.json ({err})") from err


def _generation_stop_ids(directory: str) -> list[int]:
    """`eos_token_id` (an id or a list) of `directory`/generation_config.json; [] without it."""
    path = os.path.join(directory, "generation_config.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        ids = json.load(f).get("eos_token_id")
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


class TextTokenizer:
    """Text <-> token ids, special tokens and the chat template of one model.

    Attributes: eos_token_id, pad_token_id (eos when the model has no pad token), bos_token_id
    (None when absent), stop_token_ids (eos plus `stop_tokens`), vocab_size (added tokens
    included), chat_template (Jinja source or None), and the token strings `eos_token`,
    `pad_token`, `bos_token`, `unk_token`.
    """

    def __init__(self, tokenizer: Tokenizer, *, eos_token: str, chat_template: str | None = None,
                 pad_token: str | None = None, bos_token: str | None = None,
                 unk_token: str | None = None, stop_tokens: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.eos_token, self.bos_token, self.unk_token = eos_token, bos_token, unk_token
        self.pad_token = pad_token or eos_token
        self.eos_token_id = self._id(eos_token, "eos_token")
        self.pad_token_id = self._id(self.pad_token, "pad_token")
        self.bos_token_id = self._id(bos_token, "bos_token") if bos_token else None
        extra = tuple(self._id(t, "stop_tokens") for t in stop_tokens)
        self.stop_token_ids = (self.eos_token_id,) + tuple(i for i in extra
                                                           if i != self.eos_token_id)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._template = (_template_environment().from_string(chat_template)
                          if chat_template else None)

    def _id(self, token: str, name: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"TextTokenizer: {name} {token!r} is not in the vocabulary")
        return token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text` (special tokens written in the text are matched whole)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of token `ids`."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, conversation: list[dict] | list[list[dict]],
                            tools: list[dict] | None = None, documents: list[dict] | None = None,
                            chat_template: str | None = None, add_generation_prompt: bool = False,
                            continue_final_message: bool = False, tokenize: bool = True,
                            return_dict: bool = True, **kwargs):
        """`conversation` ([{"role", "content"}], or a list of them) in the chat template, with
        transformers' signature and defaults: token ids in {"input_ids", "attention_mask"}
        (`return_dict=False`: the id list; `tokenize=False`: the text). `tools`, `documents`
        and `kwargs` are template variables; `chat_template` replaces the tokenizer's;
        `continue_final_message` ends the text inside the last message (no end of turn), for
        the model to continue it. A batch gives a list per output."""
        template = (_template_environment().from_string(chat_template) if chat_template
                    else self._template)
        if template is None:
            raise ValueError("TextTokenizer: this tokenizer has no chat template")
        if continue_final_message and add_generation_prompt:
            raise ValueError("apply_chat_template: continue_final_message and "
                             "add_generation_prompt are not compatible")
        batched = bool(conversation) and isinstance(conversation[0], list | tuple)
        variables = dict(bos_token=self.bos_token or "", eos_token=self.eos_token,
                         pad_token=self.pad_token, unk_token=self.unk_token or "", tools=tools,
                         documents=documents, add_generation_prompt=add_generation_prompt,
                         **kwargs)
        texts = [_render(template, list(chat), continue_final_message, variables)
                 for chat in (conversation if batched else [conversation])]
        if not tokenize:
            return texts if batched else texts[0]
        ids = [self.encode(text) for text in texts]
        if not return_dict:
            return ids if batched else ids[0]
        masks = [[1] * len(i) for i in ids]
        return ({"input_ids": ids, "attention_mask": masks} if batched
                else {"input_ids": ids[0], "attention_mask": masks[0]})

    @classmethod
    def from_file(cls, tokenizer_json_path: str, chat_template: str | None = None, *,
                  eos_token: str, **special_tokens) -> TextTokenizer:
        """From a `tokenizer.json` file; special tokens given by their text."""
        return cls(_read_tokenizer_json(tokenizer_json_path), chat_template=chat_template,
                   eos_token=eos_token, **special_tokens)

    @classmethod
    def from_hf_dir(cls, path: str) -> TextTokenizer:
        """From a Hugging Face directory: tokenizer.json, tokenizer_config.json, the chat
        template (in tokenizer_config.json or chat_template.jinja) and the stop tokens
        (`eos_token_id` of generation_config.json, when present)."""
        config_path = os.path.join(path, "tokenizer_config.json")
        config = {}
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        template = config.get("chat_template")
        template_path = os.path.join(path, "chat_template.jinja")
        if template is None and os.path.isfile(template_path):
            with open(template_path) as f:
                template = f.read()
        eos = _token_text(config.get("eos_token"))
        if eos is None:
            raise ValueError(f"{config_path}: no 'eos_token'")
        tokenizer = _read_tokenizer_json(os.path.join(path, "tokenizer.json"))
        stops = [tokenizer.id_to_token(i) for i in _generation_stop_ids(path)]
        return cls(tokenizer, chat_template=template, eos_token=eos,
                   pad_token=_token_text(config.get("pad_token")),
                   bos_token=_token_text(config.get("bos_token")),
                   unk_token=_token_text(config.get("unk_token")),
                   stop_tokens=[t for t in stops if t is not None])

    @classmethod
    def from_gguf(cls, path: str, *, reader: GGUFReader | None = None) -> TextTokenizer:
        """From the `tokenizer.ggml.*` metadata and `tokenizer.chat_template` of a GGUF file
        (`reader`: an already open `read_gguf(path)`)."""
        tokenizer, special_tokens = gguf_tokenizer(reader or read_gguf(path), source=path)
        return cls(tokenizer, **special_tokens)

    def save(self, directory: str) -> None:
        """Write tokenizer.json and tokenizer_config.json (with the chat template), loadable by
        transformers' AutoTokenizer, and the stop tokens as generation_config.json's
        `eos_token_id` into `directory`."""
        os.makedirs(directory, exist_ok=True)
        self.tokenizer.save(os.path.join(directory, "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
                  "add_eos_token": False, "clean_up_tokenization_spaces": False,
                  "eos_token": self.eos_token, "pad_token": self.pad_token,
                  "bos_token": self.bos_token, "unk_token": self.unk_token}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        with open(os.path.join(directory, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": list(self.stop_token_ids)}, f, indent=2)
