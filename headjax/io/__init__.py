"""Checkpoint and tokenizer I/O: Hugging Face safetensors, GGUF, native orbax checkpoints."""

from headjax.io.config_json import config_from_dict, config_to_dict
from headjax.io.export import export_hf
from headjax.io.gguf import load_gguf
from headjax.io.hf import config_from_hf, load_hf
from headjax.io.native import load_native, save_native
from headjax.io.pretrained import load_pretrained
from headjax.io.tokenizer import TextTokenizer

__all__ = ["TextTokenizer", "config_from_dict", "config_from_hf", "config_to_dict", "export_hf",
           "load_gguf", "load_hf", "load_native", "load_pretrained", "save_native"]
