"""Tasks from the reasoning-gym package (about 100 procedural generators), scored by its own scorers.

`tasks` is a list of reasoning-gym task names, mixed evenly, or `{name: weight}`, mixed by
the package's `CompositeDataset`; `config` holds generator settings per task, e.g.
`{"basic_arithmetic": {"max_terms": 3}}`. An example's `task` is its task name (`lmgym
eval` prints a table per task); its `info` holds the metadata the package's scorer needs.

Reward: `score_answer` (1.0), the package's `score_answer(answer, entry)` (0..1, partial
credit where the task gives it) of the `<answer>` field, and a strict `format_reward` (0.2;
a `<think>` field may come first); `answer_format="plain"` reads the whole reply instead.
No answer scores 0; a scorer that raises errors the rollout (never a silent 0).

Splits: train is the package's draw with `seed`; eval draws with sha256-derived seeds and
drops questions already in train or eval, so the splits of one seed never share a question
(other seeds' train may: the package's draws for seeds s and s+1 overlap).
"""

from __future__ import annotations

import difflib
import hashlib

from lmgym import Parser, Rubric, SingleTurnEnv, XMLParser

TAGS_PROMPT = (
    "Solve the problem. You may think step by step inside <think> </think> tags; then give only "
    "the final answer inside <answer> </answer> tags, with no explanation inside them. When the "
    "problem shows the expected form of the answer, follow it exactly."
)
PLAIN_PROMPT = "Solve the problem. Reply with only the final answer, no explanation."
ANSWER_FORMATS = ("tags", "plain")
EVAL_DRAWS = 20  # eval draws before giving up on finding enough questions not in train


def list_tasks() -> list[str]:
    """Every task name reasoning-gym registers (its own `composite` mixer left out)."""
    try:  # importing the package registers its generators
        from reasoning_gym.factory import DATASETS
    except ImportError as exc:
        raise ImportError("the reasoning-gym environment needs: pip install reasoning-gym==0.1.25") from exc
    return sorted(name for name in DATASETS if name != "composite")


def derived_seed(seed: int, label: str) -> int:
    """A seed far from `seed` (the package derives sub-seeds as seed+1, seed+2, ...)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{label}".encode()).digest()[:4], "big") % 2**31


def check_tasks(tasks: list[str] | dict[str, float], config: dict[str, dict]) -> dict[str, float]:
    """The tasks as {name: weight}, or a ValueError that names what is wrong."""
    if not isinstance(tasks, dict):
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct, got {tasks}")
        tasks = dict.fromkeys(tasks, 1.0)
    if not tasks:
        raise ValueError("tasks must name at least one reasoning-gym task")
    known = list_tasks()
    for name, weight in tasks.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            near = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown reasoning-gym task {name!r}{near} ({len(known)} tasks; list them all with: "
                             'python -c "import lmgym_reasoning_gym as m; print(*m.list_tasks())")')
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"the weight of task {name!r} must be a positive number, got {weight!r}")
    if stray := sorted(set(config) - set(tasks)):
        raise ValueError(f"config names tasks that are not in tasks: {stray}")
    for name, settings in config.items():
        if not isinstance(settings, dict) or {"seed", "size"} & set(settings):
            raise ValueError(f"config[{name!r}] must be an object of generator settings without seed or size")
    return {name: float(weight) for name, weight in tasks.items()}


def composite(weights: dict[str, float], config: dict[str, dict], size: int, seed: int):
    from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec

    specs = [DatasetSpec(name, weight, dict(config.get(name, {}))) for name, weight in weights.items()]
    try:
        return CompositeDataset(CompositeConfig(size=size, seed=seed, datasets=specs))
    except (TypeError, AssertionError, ValueError) as exc:  # a bad generator setting
        raise ValueError(f"reasoning-gym rejected the tasks' config {config}: {type(exc).__name__}: {exc}") from exc


def row(entry: dict) -> dict:
    metadata = entry["metadata"]
    return {"question": entry["question"], "answer": entry["answer"], "task": metadata["source_dataset"], "info": {"metadata": metadata}}


def draw_eval(weights, config, n: int, seed: int, taken: set[str]) -> list[dict]:
    """`n` rows whose questions are not in `taken`, from successive derived seeds."""
    rows: list[dict] = []
    for draw in range(EVAL_DRAWS):
        for entry in composite(weights, config, n, derived_seed(seed, f"eval/{draw}")):
            if len(rows) < n and entry["question"] not in taken:
                taken.add(entry["question"])
                rows.append(row(entry))
        if len(rows) == n:
            return rows
    raise ValueError(f"too few eval questions not in train for {n} examples: lower num_eval_examples or size")


def load_environment(
    tasks: str | list[str] | dict[str, float] = ("leg_counting", "basic_arithmetic"),
    size: int = 200,
    num_eval_examples: int = 100,
    seed: int = 0,
    config: dict[str, dict] | None = None,
    system_prompt: str | None = None,
    answer_format: str = "tags",
) -> SingleTurnEnv:
    """`size` training examples and `num_eval_examples` held-out ones; `system_prompt`
    None is the answer format's prompt, "" none at all."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if num_eval_examples < 0:
        raise ValueError(f"num_eval_examples must be at least 0, got {num_eval_examples}")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    config = dict(config or {})
    weights = check_tasks(tasks, config)
    scorers = composite(weights, config, size, seed)
    train = [row(entry) for entry in scorers]
    evals = draw_eval(weights, config, num_eval_examples, seed, {r["question"] for r in train}) if num_eval_examples else []

    def score_answer(prompt, completion, answer, info, parser) -> float:
        """The package's score of the parsed answer (the composite hands it to the scorer of
        `metadata.source_dataset`, built with the task's config); 0.0 when there is none."""
        given = parser.parse_answer(completion)
        if given is None:
            return 0.0
        entry = {"question": prompt[-1]["content"], "answer": answer, "metadata": info["metadata"]}
        return float(scorers.score_answer(given, entry))

    tags = answer_format == "tags"
    parser = XMLParser(["think", "answer"], optional=("think",)) if tags else Parser()

    def exact_teacher(seed: int = 0) -> list[dict]:
        """Warm-start rows: the training split answered with the package's own answers."""
        reply = (lambda answer: parser.format(answer=answer)) if tags else str
        return [
            {"prompt": e.prompt, "completion": [{"role": "assistant", "content": reply(e.answer)}]}
            for e in env.dataset
            if e.answer is not None
        ]

    rubric = Rubric([score_answer, parser.get_format_reward_func()], [1.0, 0.2], parser) if tags else Rubric([score_answer], parser=parser)
    env = SingleTurnEnv(
        train,  # a list, not a datasets.Dataset: the metadata differs from task to task
        evals or None,
        system_prompt=(TAGS_PROMPT if tags else PLAIN_PROMPT) if system_prompt is None else system_prompt or None,
        parser=parser,
        rubric=rubric,
        sampling_args={"temperature": 0.7, "max_tokens": 1024},
        sft_examples=exact_teacher,
    )
    return env
