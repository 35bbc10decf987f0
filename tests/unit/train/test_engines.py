"""The `RolloutEngine` interface: what training relies on from any engine.

The in-process engine on a tiny model: what it samples after a publish is the published
weights (its logprobs are the trainer's), a snapshot ignores training until a publish
*and* its refresh, closing twice is harmless, and its RNG state restores its samples.
Then the orchestrators against an engine written in the test (scripted replies, no
torch generation): each batch is labelled with the version of the weights that sampled
it, and closing closes the snapshot and the engine.
"""

from __future__ import annotations

import asyncio
import copy
import threading

import pytest

torch = pytest.importorskip("torch")

from lmgym import Rubric, SingleTurnEnv  # noqa: E402
from lmgym.train.config import AlgorithmConfig, SamplingConfig  # noqa: E402
from lmgym.train.engines import RolloutEngine  # noqa: E402
from lmgym.train.engines.local import LocalClient, LocalEngine  # noqa: E402
from lmgym.train.engines.sampling import Sample  # noqa: E402
from lmgym.train.models import char_tokenizer, tiny_llama  # noqa: E402
from lmgym.train.orchestrator import AsyncOrchestrator, DataStream, Orchestrator  # noqa: E402
from lmgym.train.render import encode  # noqa: E402
from lmgym.train.trainer import token_logprobs  # noqa: E402

USER = [{"role": "user", "content": "say hi"}]


@pytest.fixture
def tokenizer():
    return char_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_llama(tokenizer)


def sample(engine, **sampling):
    async def run():
        return await engine.client.chat(USER, model="local", sampling={"max_tokens": 12, "temperature": 1.0, **sampling})

    return asyncio.run(run())


def gap(model, response) -> float:
    """How far the sampled tokens' logprobs are from `model`'s (what the trainer computes)."""
    ids = torch.tensor([response.prompt_token_ids + response.token_ids])
    with torch.no_grad():
        logprobs = token_logprobs(model, ids, torch.ones_like(ids), 1.0)[0, len(response.prompt_token_ids) - 1 :]
    return max(abs(a - b) for a, b in zip(logprobs.tolist(), response.logprobs, strict=True))


def train_a_little(model, seed: int) -> None:
    """Stands in for an optimiser step: every weight moves, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.2)


SAME, DIFFERENT = 1e-4, 1e-2  # float32 on both sides; a step moves logprobs by far more


# --------------------------------------------------------------------------- the in-process engine


def test_after_a_publish_the_engine_samples_the_published_weights(model, tokenizer):
    engine = LocalEngine(model, tokenizer)
    before = copy.deepcopy(model)
    train_a_little(model, seed=1)
    engine.publish(model, 1)
    response = sample(engine)
    assert gap(model, response) < SAME < DIFFERENT < gap(before, response)


def test_a_snapshot_ignores_training_until_a_publish_and_its_refresh(model, tokenizer):
    engine = LocalEngine(model, tokenizer)
    snapshot = engine.snapshot()
    v0 = copy.deepcopy(model)
    train_a_little(model, seed=1)
    assert gap(v0, sample(snapshot)) < SAME  # training moved the trainer's weights, not the snapshot's
    engine.publish(model, 1)
    assert gap(v0, sample(snapshot)) < SAME  # published, not loaded yet: a batch in flight keeps its weights
    snapshot.refresh()
    v1 = copy.deepcopy(model)
    response = sample(snapshot)
    assert gap(v1, response) < SAME < DIFFERENT < gap(v0, response)
    train_a_little(model, seed=2)
    snapshot.refresh()  # nothing published since: still version 1
    assert gap(v1, sample(snapshot)) < SAME


def test_publishing_another_module_to_the_in_process_engine_is_refused(model, tokenizer):
    engine = LocalEngine(model, tokenizer)
    with pytest.raises(ValueError, match="module it was built on"):
        engine.publish(tiny_llama(tokenizer, seed=1), 1)


def test_closing_twice_is_harmless_and_detaches_the_snapshots(model, tokenizer):
    engine = LocalEngine(model, tokenizer)
    snapshot = engine.snapshot()
    v0 = copy.deepcopy(model)
    engine.close()
    engine.close()
    snapshot.close()
    train_a_little(model, seed=1)
    engine.publish(model, 1)
    snapshot.refresh()
    assert gap(v0, sample(snapshot)) < SAME  # a closed snapshot gets no more weights


def test_the_rng_state_restores_what_is_sampled(model, tokenizer):
    engine = LocalEngine(model, tokenizer, seed=3)
    state = engine.rng_state()
    first, second = sample(engine).token_ids, sample(engine).token_ids
    assert first != second  # the generator moved on
    engine.set_rng_state(state)
    assert sample(engine).token_ids == first
    engine.set_rng_state(None)  # a checkpoint without an engine state leaves it as it is
    assert sample(engine).token_ids == second


def test_an_engine_that_forgets_a_method_fails_at_creation():
    class NoPublish(RolloutEngine):
        @property
        def client(self):
            return None

    with pytest.raises(TypeError, match="publish"):
        NoPublish()


# --------------------------------------------------------------------------- the orchestrators, with an engine written here


class Policy:
    """The "weights" of the scripted engine: the one reply it gives."""

    def __init__(self, reply: str):
        self.reply = reply


class ScriptedSampler:
    def __init__(self, tokenizer, policy: Policy):
        self.tokenizer, self.policy = tokenizer, policy

    def generate(self, prompts, params):
        ids = encode(self.tokenizer, self.policy.reply) + [self.tokenizer.eos_token_id]
        return [Sample(ids, [-0.5] * len(ids), "stop", self.policy.reply) for _ in prompts]


class ScriptedEngine(RolloutEngine):
    """Shares the trainer's policy object; a snapshot keeps its own copy until refreshed."""

    def __init__(self, tokenizer, policy: Policy, *, origin: ScriptedEngine | None = None):
        self.tokenizer, self.policy, self.origin = tokenizer, policy, origin
        self._client = LocalClient(ScriptedSampler(tokenizer, policy))
        self.published: list[int] = []
        self.snapshots: list[ScriptedEngine] = []
        self.staged: str | None = None
        self.refreshes = self.closes = 0

    @property
    def client(self):
        return self._client

    def publish(self, model, version):
        self.published.append(version)
        if self.origin is not None:
            self.staged = model.reply
        for snapshot in self.snapshots:
            snapshot.publish(model, version)

    def snapshot(self):
        snapshot = ScriptedEngine(self.tokenizer, Policy(self.policy.reply), origin=self)
        self.snapshots.append(snapshot)
        return snapshot

    def refresh(self):
        self.refreshes += 1
        if self.staged is not None:
            self.policy.reply, self.staged = self.staged, None

    def close(self):
        self.closes += 1


def says_yes(completion, answer) -> float:
    return float(completion[-1]["content"] == answer)


def orchestrator(kind, tokenizer, policy, **kwargs):
    env = SingleTurnEnv(dataset=[{"question": f"q{i}", "answer": "yes"} for i in range(8)], rubric=Rubric([says_yes]))
    engine = ScriptedEngine(tokenizer, policy)
    algorithm = AlgorithmConfig(prompts_per_step=2, group_size=2)
    return kind(env, engine, DataStream(env.dataset, seed=0), algorithm, SamplingConfig(max_tokens=8), 128, **kwargs), engine


def test_the_synchronous_orchestrator_samples_what_was_published(tokenizer):
    policy = Policy("no")
    orch, engine = orchestrator(Orchestrator, tokenizer, policy)
    first = orch.next_batch(0)
    policy.reply = "yes"  # the trainer's step
    orch.publish(policy, 1)
    second = orch.next_batch(1)
    orch.close()
    assert (first.policy_version, first.metrics["reward"]) == (0, 0.0)
    assert (second.policy_version, second.metrics["reward"]) == (1, 1.0)
    assert engine.published == [1] and engine.refreshes == 2 and engine.closes == 1
    assert len(first.samples) == 4 and first.samples[0].sampler_logprobs.count(-0.5) == len("no") + 1


def test_an_async_batch_is_labelled_with_the_weights_that_sampled_it(tokenizer):
    policy = Policy("no")
    orch, engine = orchestrator(AsyncOrchestrator, tokenizer, policy, max_off_policy_steps=1)
    batches = [orch.next_batch(0)]
    policy.reply = "yes"  # trained, not yet published: the snapshot must not see it
    batches.append(orch.next_batch(1))  # sampled without waiting: one version behind is allowed
    orch.publish(policy, 1)
    batches.append(orch.next_batch(2))  # two behind is not: it waited for version 1
    [snapshot] = engine.snapshots
    orch.close()
    orch.close()
    assert [(b.policy_version, b.metrics["reward"]) for b in batches] == [(0, 0.0), (0, 0.0), (1, 1.0)]
    assert engine.published == snapshot.published == [1]
    assert snapshot.refreshes >= 3 and snapshot.closes == 1 and engine.closes == 2
    assert not [t for t in threading.enumerate() if t.name == "lmgym-generation"]
