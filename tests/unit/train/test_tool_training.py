"""Tool environments train: sampled tool calls run through the in-process engine, become
one token-exact sequence per rollout, and give a GRPO step a gradient. Before, the engine
never read tool calls: every reward was 0 and every gradient too.

A scripted sampler (the real tokenizer, replies chosen from the prompt it is given)
stands in for the model so that the rollouts are known; everything else is the real
training loop on a real model."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")

from local_rollouts import PromptedSampler, hermes_call, run_local  # noqa: E402  (tests/local_rollouts.py)
from paths import ROOT
from tiny_tools import save_tool_model  # noqa: E402  (tests/tiny_tools.py)

import lmgym  # noqa: E402
from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.metrics import NullSink  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402


def calculator_student(prompt: str, asked: int) -> str:
    """Calls the tool on every other first turn and answers with its result; guesses otherwise."""
    if "<|im_start|>tool\n" in prompt:
        return f"<answer>{prompt.rsplit('<|im_start|>tool' + chr(10), 1)[1].split('<|im_end|>')[0]}</answer>"
    expression = re.findall(r"(\d+ \* \d+)\?", prompt)[-1]  # the question (its capital W is <|unk|> here)
    return hermes_call("calculate", expression=expression) if asked % 2 == 0 else "<answer>12</answer>"


def test_a_tool_environment_gives_a_grpo_step_rewards_and_a_gradient(tmp_path):
    model_dir = save_tool_model(tmp_path / "model")
    config = load_config(ROOT / "configs" / "calculator-tools.toml", [
        f"model.name={model_dir}", "model.lora.enabled=false", "sft.warm_start=false", "trainer.max_seq_len=2048", "trainer.micro_batch_size=8",
        "algorithm.prompts_per_step=2", "algorithm.group_size=4", "eval.every=0", "logging.console_every=0",
        f"logging.output_dir={tmp_path / 'run'}",
    ])
    loop = build_loop(config, tmp_path / "run", NullSink())
    engine = loop.orchestrator.engine
    engine.client.sampler = PromptedSampler(engine.sampler.tokenizer, calculator_student)
    batch = loop.orchestrator.next_batch(loop.step)
    assert batch.metrics["tool_calls_per_rollout"] == 0.5  # every other rollout called the tool
    assert batch.metrics["correct_answer"] == 0.5 and batch.metrics["reward_std"] > 0
    assert batch.metrics["rollouts_split_per_turn"] == 0  # chatml-tools keeps every turn a prefix
    assert len(batch.samples) == 8
    called = [s for s in batch.samples if sum(s.loss_mask) > 40]  # the call and the answer are trained
    text = loop.tokenizer.decode(called[0].input_ids, skip_special_tokens=False)
    assert '"name": "calculate"' in text and "<|im_start|>tool\n" in text
    metrics = loop.trainer.step(batch)
    assert metrics["grad_norm"] > 0
    loop.orchestrator.close()


def test_wiki_search_runs_its_tools_for_the_trained_model():
    env = lmgym.load_environment("wiki-search")
    rollout, text = run_local(env, [hermes_call("search", query="the"), hermes_call("read", title="nothing such"), "done"])
    assert rollout.metrics["tool_calls"] == 2 and rollout.metrics["calls_search"] == 1
    assert rollout.metrics["tool_errors"] == 1  # reading a page that does not exist is answered, not a crash
    assert text.count("<|im_start|>tool\n") == 2


def test_python_tests_runs_the_models_code_in_its_sandbox():
    env = lmgym.load_environment("python-tests")
    rollout, text = run_local(env, [hermes_call("python", code="print(6 * 7)"), "no idea"])
    assert rollout.metrics["tool_calls"] == 1
    assert "<|im_start|>tool\n42" in text


def test_a_game_without_tools_trains_on_plain_text_turns():
    env = lmgym.load_environment("tic-tac-toe")
    rollout, _ = run_local(env, ["5", "1", "9", "3", "7"] * 2, fmt="hermes")
    assert rollout.turns and not any(t.assistant.get("tool_calls") for t in rollout.turns)


COUNTER_ENV = '''
from lmgym import Rubric
from lmgym.envs import StatefulToolEnv


def read(counter: dict) -> int:
    """The counter's value."""
    return counter["value"]


def add(amount: int, counter: dict) -> int:
    """Add to the counter.

    Args:
        amount: what to add.
    """
    counter["value"] += amount
    return counter["value"]


class CounterEnv(StatefulToolEnv):
    async def setup_state(self, state, example):
        state["counter"] = {"value": 3}


def reached(state, answer) -> float:
    return float(state["counter"]["value"] == int(answer))


def load_environment():
    rows = [{"question": "make it 10", "answer": "10"}] * 8
    return CounterEnv(rows, tools=[read, add], hidden_args=["counter"], max_turns=5,
                      rubric=Rubric([reached]))
'''


def counter_agent(prompt: str, asked: int) -> str:
    """Reads the counter, adds in two calls (the second overshoots in every other rollout), says done."""
    turn = prompt.count("<|im_start|>tool\n")
    if turn == 0:
        return hermes_call("read")
    if turn == 1:
        return hermes_call("add", amount=4)
    if turn == 2:
        return hermes_call("add", amount=3 if asked % 2 else 5)
    return "done"


def test_a_stateful_tool_environment_with_three_calls_per_episode_trains_without_splits(tmp_path, monkeypatch):
    folder = tmp_path / "environments" / "counter"
    folder.mkdir(parents=True)
    (folder / "counter.py").write_text(COUNTER_ENV)
    monkeypatch.chdir(tmp_path)
    model_dir = save_tool_model(tmp_path / "model")
    config = load_config(ROOT / "configs" / "calculator-tools.toml", [
        f"model.name={model_dir}", "model.lora.enabled=false", "sft.warm_start=false", "env.name=counter", "env.args={}",
        "trainer.max_seq_len=4096", "trainer.micro_batch_size=8", "algorithm.prompts_per_step=2", "algorithm.group_size=4",
        "eval.every=0", "logging.console_every=0", f"logging.output_dir={tmp_path / 'run'}",
    ])
    loop = build_loop(config, tmp_path / "run", NullSink())
    engine = loop.orchestrator.engine
    engine.client.sampler = PromptedSampler(engine.sampler.tokenizer, counter_agent)
    batch = loop.orchestrator.next_batch(loop.step)
    assert batch.metrics["tool_calls_per_rollout"] == 3 and batch.metrics["tool_errors"] == 0
    assert batch.metrics["reward"] == 0.5  # 3 + 4 + 3 = 10 in half the rollouts
    assert batch.metrics["rollouts_split_per_turn"] == 0 and len(batch.samples) == 8  # one sequence per rollout
    assert loop.trainer.step(batch)["grad_norm"] > 0
    loop.orchestrator.close()
