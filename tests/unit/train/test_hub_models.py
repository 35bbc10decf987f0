"""Hugging Face hub ids as `model.name`: read from a hub cache written here, in the layout
huggingface_hub writes (models--ORG--NAME/snapshots/COMMIT, refs/BRANCH), with
HF_HUB_OFFLINE=1 so nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cli_runner import invoke as lmgym  # noqa: E402
from train_setups import CONFIG, SMALL  # noqa: E402

from lmgym.errors import UsageError  # noqa: E402
from lmgym.train.hub import hub_cache_dir  # noqa: E402
from lmgym.train.models import char_tokenizer, load_model, load_tokenizer, save_model, tiny_llama  # noqa: E402

REPO = "lmgym-test/tiny-chat"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache under HF_HOME, offline; returns the cache folder."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home / "hub"


def write_hub_model(cache: Path, repo_id: str, commit: str, model, tokenizer, refs=("main",)) -> Path:
    """`model` and `tokenizer` as the snapshot `commit` of `repo_id`, each of `refs` pointing at it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = save_model(model, tokenizer, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def same_weights(a, b) -> bool:
    return all(torch.equal(pa, pb) for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_hub_id_loads_from_the_cache(hub):
    tokenizer = char_tokenizer()
    original = tiny_llama(tokenizer, seed=1)
    write_hub_model(hub, REPO, COMMIT_A, original, tokenizer)
    model, loaded_tokenizer = load_model(REPO)
    assert not model.training and model.dtype == torch.float32
    assert same_weights(model, original)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert load_tokenizer(REPO).encode("3817") == tokenizer.encode("3817")
    bf16, _ = load_model(REPO, dtype="bfloat16", attn_implementation="eager")  # keyword arguments of a load for inference
    assert bf16.dtype == torch.bfloat16 and bf16.config._attn_implementation == "eager"


def test_revision_picks_the_snapshot(hub):
    tokenizer = char_tokenizer()
    a, b = tiny_llama(tokenizer, seed=1), tiny_llama(tokenizer, seed=2)
    write_hub_model(hub, REPO, COMMIT_A, a, tokenizer, refs=("main",))
    write_hub_model(hub, REPO, COMMIT_B, b, tokenizer, refs=("v2",))
    assert same_weights(load_model(REPO)[0], a)  # unset = main
    assert same_weights(load_model(REPO, revision="main")[0], a)
    assert same_weights(load_model(REPO, revision="v2")[0], b)  # a branch or tag
    assert same_weights(load_model(REPO, revision=COMMIT_B)[0], b)  # a commit
    with pytest.raises(UsageError, match=r"'lmgym-test/tiny-chat' at revision 'v3'.*hf download lmgym-test/tiny-chat --revision v3"):
        load_model(REPO, revision="v3")


def test_hf_home_alone_locates_the_cache(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    tokenizer = char_tokenizer()
    write_hub_model(hub, REPO, COMMIT_A, tiny_llama(tokenizer), tokenizer)  # HF_HOME/hub
    assert hub_cache_dir() == hub
    assert load_model(REPO)[0].config.vocab_size == len(tokenizer)


def test_uncached_id_offline_is_an_error_naming_it_and_how_to_fetch_it(hub):
    with pytest.raises(UsageError) as info:
        load_model("nobody/missing-model")
    message = str(info.value)
    for part in ("'nobody/missing-model'", str(hub), "HF_HUB_OFFLINE", "hf download nobody/missing-model", "HF_HOME"):
        assert part in message, message
    with pytest.raises(UsageError, match="'nobody/missing-model'.*hf download"):
        load_tokenizer("nobody/missing-model")
    with pytest.raises(UsageError, match="'runs/final' is not a local directory, nor a Hugging Face hub model"):
        load_model("runs/final")  # a relative path that does not exist reads as an id: the message says both


def test_names_that_are_neither_keep_the_old_error(hub):
    with pytest.raises(UsageError, match=r"unknown model 'gpt-9'.*'tiny-llama', 'smollm2'.*directory.*hub id"):
        load_model("gpt-9")
    with pytest.raises(UsageError, match="model.revision = 'v2' applies to Hugging Face hub ids"):
        load_model("tiny-llama", revision="v2")


def test_model_with_its_own_code_needs_trust_remote_code(hub):
    tokenizer = char_tokenizer()
    snapshot = write_hub_model(hub, REPO, COMMIT_A, tiny_llama(tokenizer), tokenizer)
    config = json.loads((snapshot / "config.json").read_text())
    config.update(model_type="lmgym-custom", auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"})
    (snapshot / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r"'lmgym-test/tiny-chat' ships its own Python code.*model.trust_remote_code = true"):
        load_model(REPO)
    with pytest.raises(UsageError, match="model.trust_remote_code = true"):
        load_model(str(snapshot))  # the same model as a directory


def test_hub_model_without_a_chat_template_is_refused(hub):
    tokenizer = char_tokenizer()
    tokenizer.chat_template = None
    write_hub_model(hub, REPO, COMMIT_A, tiny_llama(tokenizer), tokenizer)
    with pytest.raises(UsageError, match="tokenizer of model 'lmgym-test/tiny-chat' has no chat template"):
        load_model(REPO)


def test_lmgym_train_with_a_hub_id_runs_a_step(hub, tmp_path):
    tokenizer = char_tokenizer()
    write_hub_model(hub, REPO, COMMIT_B, tiny_llama(tokenizer, seed=4), tokenizer, refs=("v2",))
    run = tmp_path / "run"
    overrides = [f"--{o}" if "=" in o else o for o in SMALL]
    result = lmgym("train", str(CONFIG), *overrides, "--model.name", REPO, "--model.revision", "v2",
                   "--trainer.max_steps", "1", "--checkpoint.every", "0", "--logging.output_dir", str(run))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "step" in r] == [1]
    assert (run / "final" / "config.json").is_file()
    assert 'name = "lmgym-test/tiny-chat"' in (run / "config.toml").read_text()


def test_model_with_its_own_code_loads_when_trusted(hub, tmp_path):
    """In a process of its own: transformers copies the code into HF_HOME/modules, a folder
    it fixes when it is imported, so the environment must be set before."""
    import subprocess
    import sys

    from cli_runner import process_env

    tokenizer = char_tokenizer()
    snapshot = write_hub_model(hub, REPO, COMMIT_A, tiny_llama(tokenizer), tokenizer)
    config = json.loads((snapshot / "config.json").read_text())
    config.update(model_type="lmgym-custom", architectures=["CustomModel"],
                  auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"})
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot / "custom.py").write_text(
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'lmgym-custom'\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    code = f"from lmgym.train.models import load_model; print(type(load_model({REPO!r}, trust_remote_code=True)[0]).__name__)"
    import os

    env = process_env(**{k: os.environ[k] for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")})
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("CustomModel")
    assert (hub.parent / "modules").is_dir()  # under HF_HOME, not the user's cache
