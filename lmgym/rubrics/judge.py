"""LLM judges as reward functions: one line adds one to any rubric.

    rubric.add(Judge("gpt-4.1-mini", base_url="https://api.openai.com/v1"), weight=0.5)

`Judge` asks a judge model about one rollout through a prompt template with named fields
(`{question}`, `{answer}`, `{response}`, `{completion}`, `{prompt}`, `{task}` and any
dataset column), and reads its verdict as yes/no, a numeric score or a JSON object
(`lmgym.rubrics.verdicts`): an unreadable verdict is a recorded rollout error, never a 0.
`GroupJudge` shows the judge every rollout of one example at once and asks for a score
or a ranking of each (relative judging, for tasks without a reference answer); the
order shown is shuffled per example so the judge's position bias does not follow the
rollout index. `JudgeRubric` is a Rubric with a Judge in it.

The judge endpoint (`JudgeEndpoint`) is any OpenAI-compatible server, with its own key
variable and sampling (temperature 0 by default). Its requests are bounded by its own
`max_concurrency` and, since scoring happens inside the run's workers, by the run's
concurrency. Identical judge prompts are sent once per run (an in-memory cache; rollouts
of a group often repeat a response word for word).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import string
from typing import Any, Callable, Mapping, Sequence

import orjson

from lmgym.clients.per_loop import Bound, LoopClients
from lmgym.errors import RewardError, VerdictError
from lmgym.messages import last_text, message_text, render_transcript
from lmgym.parsers.parser import Parser
from lmgym.rubrics.rubric import Rubric
from lmgym.rubrics.verdicts import json_field, parse_json, parse_score, parse_yes_no
from lmgym.types import Messages

DEFAULT_TEMPLATE = """Grade a response to a question against the reference answer.

Question:
{question}

Reference answer:
{answer}

Response:
{response}

Does the response give the same final answer as the reference? Reply with one line: "Verdict: yes" or "Verdict: no"."""

GROUP_TEMPLATE = """Several responses to one question follow. Score each response from {low:g} (worst) to {high:g} (best) for how well it answers the question.

Question:
{question}

{responses}

Reply with only a JSON object holding one score per response, in order: {{"scores": [...]}}"""

RANK_TEMPLATE = """Several responses to one question follow. Rank them from best to worst.

Question:
{question}

{responses}

Reply with only a JSON object listing the response numbers from best to worst: {{"ranking": [...]}}"""


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def judge_fields(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What a template may name, from the values a rubric injects for one rollout."""
    prompt, completion = kwargs.get("prompt") or [], kwargs.get("completion") or []
    fields = {k: v for k, v in (kwargs.get("info") or {}).items()}
    fields.update(
        question=last_text(prompt, "user"),
        response=last_text(completion, "assistant"),
        completion=render_transcript(completion),
        prompt=render_transcript(prompt),
        answer=kwargs.get("answer"),
        task=kwargs.get("task"),
    )
    return {k: "(none)" if v is None else v for k, v in fields.items()}


def fill(template: str, fields: Mapping[str, Any]) -> str:
    missing = [name for name in template_fields(template) if name not in fields]
    if missing:
        raise RewardError(f"judge template names {missing}, which this rollout lacks; available: {sorted(fields)}")
    return template.format(**fields)


class JudgeEndpoint:
    """A judge model behind an OpenAI-compatible API, with a per-run cache of its answers."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_var: str = "OPENAI_API_KEY",
        sampling: Mapping[str, Any] | None = None,
        max_concurrency: int = 32,
        system_prompt: str | None = None,
        max_retries: int = 3,
    ):
        self.model, self.base_url, self.api_key_var = model, base_url, api_key_var
        self.sampling = {"temperature": 0.0, "max_tokens": 512, **(sampling or {})}
        self.max_concurrency, self.system_prompt, self.max_retries = max_concurrency, system_prompt, max_retries
        self._answers: dict[str, str] = {}
        self._clients = LoopClients(base_url, api_key_var, max_concurrency=max_concurrency, max_retries=max_retries)
        self.requests = 0  # judge calls actually sent (cache misses)

    def __repr__(self) -> str:
        return f"JudgeEndpoint(model={self.model!r}, base_url={self.base_url!r})"

    async def ask(self, text: str) -> str:
        """The judge's reply to `text`; each distinct text is sent once per run."""
        key = hashlib.sha256(text.encode()).hexdigest()
        if key in self._answers:
            return self._answers[key]
        bound = self._clients.bound()  # per event loop: training runs one per step
        if key in bound.pending:
            return await asyncio.shield(bound.pending[key])
        future = bound.pending[key] = asyncio.get_running_loop().create_future()
        try:
            answer = await self._send(text, bound)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a failure nobody else waited for is not "never retrieved"
            raise
        finally:
            bound.pending.pop(key, None)
        self._answers[key] = answer
        future.set_result(answer)
        return answer

    async def _send(self, text: str, bound: Bound) -> str:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": text})
        async with bound.slot():
            self.requests += 1
            response = await bound.client.chat(messages, model=self.model, sampling=self.sampling)
        return message_text(response.message)


def endpoint_of(model: str | JudgeEndpoint, **kwargs: Any) -> JudgeEndpoint:
    return model if isinstance(model, JudgeEndpoint) else JudgeEndpoint(model, **kwargs)


def verdict_reader(verdict: str, score_range: tuple[float, float], json_key: str) -> Callable[[str], float]:
    """yes_no → 1/0; score → the range scaled to [0, 1]; json → `json_key` of a JSON verdict
    (a boolean, or a number in the range)."""
    low, high = score_range

    def read_json(text: str) -> float:
        value = json_field(parse_json(text), json_key)
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)) and low <= value <= high:
            return (value - low) / (high - low)
        raise VerdictError(f"the judge's {json_key!r} is {value!r}, not a boolean or a number in [{low:g}, {high:g}]")

    readers = {"yes_no": parse_yes_no, "score": lambda text: parse_score(text, low, high), "json": read_json}
    if verdict not in readers:
        raise ValueError(f"verdict must be one of {sorted(readers)}, got {verdict!r}")
    return readers[verdict]


class Judge:
    """A reward function that asks a judge model about one rollout; the reward is its verdict."""

    def __init__(
        self,
        model: str | JudgeEndpoint,
        *,
        template: str = DEFAULT_TEMPLATE,
        verdict: str = "yes_no",
        score_range: tuple[float, float] = (0.0, 10.0),
        json_key: str = "score",
        name: str = "judge",
        **endpoint: Any,
    ):
        """`endpoint` takes JudgeEndpoint's options: base_url, api_key_var, sampling, max_concurrency, system_prompt."""
        self.endpoint = endpoint_of(model, **endpoint)
        self.template, self.read = template, verdict_reader(verdict, score_range, json_key)
        self.__name__ = name
        if not template_fields(template):
            raise ValueError("a judge template should name at least one field, e.g. {response}")

    async def __call__(self, **kwargs: Any) -> float:
        reply = await self.endpoint.ask(fill(self.template, judge_fields(kwargs)))
        return self.read(reply)


class GroupJudge:
    """A group reward function: the judge scores (or ranks) all rollouts of one example together."""

    __lmgym_group_reward__ = True

    def __init__(
        self,
        model: str | JudgeEndpoint,
        *,
        mode: str = "score",
        score_range: tuple[float, float] = (0.0, 10.0),
        template: str | None = None,
        name: str = "group_judge",
        shuffle: bool = True,
        **endpoint: Any,
    ):
        if mode not in ("score", "rank"):
            raise ValueError(f"mode must be 'score' or 'rank', got {mode!r}")
        self.endpoint = endpoint_of(model, **endpoint)
        self.mode, self.score_range, self.shuffle = mode, score_range, shuffle
        self.template = template or (GROUP_TEMPLATE if mode == "score" else RANK_TEMPLATE)
        self.__name__ = name

    async def __call__(self, **group: Any) -> list[float]:
        completions: list[Messages] = group["completions"]
        n = len(completions)
        order = list(range(n))
        if self.shuffle:
            random.Random(orjson.dumps(str(group["example_ids"][0]))).shuffle(order)
        shown = "\n\n".join(
            f"Response {position + 1}:\n{last_text(completions[index], 'assistant')}" for position, index in enumerate(order)
        )
        fields = {**judge_fields({k: v[0] for k, v in group.items() if isinstance(v, list) and v}), "responses": shown}
        low, high = self.score_range
        reply = await self.endpoint.ask(fill(self.template, {**fields, "low": low, "high": high}))
        shown_scores = self._scores(parse_json(reply), n)
        scores = [0.0] * n
        for position, index in enumerate(order):
            scores[index] = shown_scores[position]
        return scores

    def _scores(self, verdict: Any, n: int) -> list[float]:
        low, high = self.score_range
        if self.mode == "score":
            values = json_field(verdict, "scores")
            if not isinstance(values, list) or len(values) != n or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high for v in values
            ):
                raise VerdictError(f"the judge's scores {values!r} are not {n} numbers in [{low:g}, {high:g}]")
            return [(v - low) / (high - low) for v in values]
        ranking = json_field(verdict, "ranking")
        if not isinstance(ranking, list) or sorted(ranking) != list(range(1, n + 1)):
            raise VerdictError(f"the judge's ranking {ranking!r} is not an order of the responses 1..{n}")
        return [1.0 - ranking.index(position + 1) / (n - 1) if n > 1 else 1.0 for position in range(n)]


class JudgeRubric(Rubric):
    """A Rubric whose main reward is a Judge: `JudgeRubric("gpt-4.1-mini", base_url=...)`;
    `funcs` (format, guards) follow it."""

    def __init__(
        self,
        model: str | JudgeEndpoint,
        *,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        judge_weight: float = 1.0,
        parser: Parser | None = None,
        **judge: Any,
    ):
        super().__init__(parser=parser)
        self.judge = Judge(model, **judge)
        self.add(self.judge, judge_weight).extend(funcs, weights)
