"""`lmgym eval ENV --model RUN_DIR/final` (no --base-url): the trained policy evaluated in this
process through the training engine's client, scoring what training's own evaluation scored."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from cli_runner import assert_one_error, invoke  # noqa: E402
from train_setups import small_config  # noqa: E402

from lmgym.eval.results import read_metadata  # noqa: E402
from lmgym.train.model_names import runs_in_process  # noqa: E402
from lmgym.train.models import char_tokenizer, save_model, tiny_llama  # noqa: E402
from lmgym.train.policy_client import load_policy  # noqa: E402
from lmgym.train.session import train  # noqa: E402

ENV_ARGS = '{"num_examples": 200, "num_eval_examples": 50}'  # train_setups.SMALL's


@pytest.mark.parametrize("model, base_url, local", [
    ("tiny-llama", None, True), ("smollm2", None, True), ("Qwen/Qwen3-0.6B", None, True),
    ("gpt-4o-mini", None, False), ("ft:gpt-4o:org::abc", None, False),
    ("Qwen/Qwen3-0.6B", "http://localhost:8000/v1", False), ("tiny-llama", "http://localhost:8000/v1", False),
])
def test_which_models_run_in_process(model, base_url, local):
    assert runs_in_process(model, base_url) is local


def test_a_folder_runs_in_process(tmp_path):
    assert runs_in_process(str(tmp_path), None) and not runs_in_process(str(tmp_path / "missing"), None)


def test_the_trained_policy_scores_as_trainings_own_evaluation_did(tmp_path):
    run_dir = tmp_path / "run"
    config = small_config(run_dir, "trainer.max_steps=1", "eval.every=1", "eval.num_examples=12", "trainer.lr=1e-2")
    train(config, run_dir)
    trained = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert trained["step"] == 1 and "eval/reward" in trained

    sampling = json.dumps({"temperature": 0, "max_tokens": config.sampling.max_tokens})
    out = tmp_path / "eval"
    result = invoke("eval", "reverse-digits", "--model", str(run_dir / "final"), "-n", "12", "-r", "1",
                    "-a", ENV_ARGS, "-S", sampling, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "in this process" in result.flat and "on cpu" in result.flat
    summary = read_metadata(out)["summary"]
    assert summary["rollouts"] == 12 and summary["errors"] == {}
    assert summary["reward_mean"] == pytest.approx(trained["eval/reward"], abs=1e-9)
    assert summary["metrics"]["digit_accuracy"] == pytest.approx(trained["eval/digit_accuracy"], abs=1e-9)


def test_greedy_replies_are_what_transformers_generate_gives(tmp_path):
    """The in-process client against transformers' own `generate` on the same saved model:
    each greedy reply is the same text (a random model, so any slip in the prompt shows)."""
    tokenizer = char_tokenizer()
    folder = save_model(tiny_llama(tokenizer, seed=3), tokenizer, tmp_path / "model")
    out = tmp_path / "eval"
    result = invoke("eval", "reverse-digits", "--model", str(folder), "-n", "6", "-r", "1",
                    "-S", '{"temperature": 0, "max_tokens": 12}', "-o", str(out))
    assert result.exit_code == 0, result.output
    model, tokenizer = load_policy(str(folder))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
        assert row["completion"][-1]["content"] == expected


def test_a_lora_adapter_folder_is_merged_into_its_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = char_tokenizer()
    base = save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "base")
    adapted = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.peft_config["default"].base_model_name_or_path = str(base)
    adapted.save_pretrained(tmp_path / "adapter")

    merged, _ = load_policy(str(tmp_path / "adapter"))
    plain, _ = load_policy(str(base))
    ids = torch.tensor([tokenizer.encode("user\n12345")])
    with torch.no_grad():
        expected = adapted.eval()(ids).logits
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
        assert not torch.allclose(plain(ids).logits, expected, atol=1e-3)  # the adapter changed something


def test_a_tool_environment_on_a_model_that_cannot_write_calls_is_refused_naming_the_way_out():
    result = invoke("eval", "calculator", "--model", "tiny-llama", "-n", "1", "-r", "1")
    assert_one_error(result, "tiny-llama", "cannot be evaluated in-process on a tool environment", "--base-url")
