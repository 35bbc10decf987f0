"""Every error lmgym raises, in one tree.

    LmgymError
    ├── UsageError                 bad input from the user; the message says what to fix
    │   ├── EnvironmentNotFoundError   unknown environment name (lists the known ones)
    │   ├── DatasetError               dataset without `prompt`/`question`, bad rows
    │   ├── EnvironmentArgumentError   a value load_environment refused (also a ValueError)
    │   └── ResultsFileError           a results.jsonl that cannot be resumed
    ├── ModelError                 a request to a model failed (after retries, where retried)
    │   ├── ModelConnectionError       server unreachable or connection dropped   (fatal)
    │   ├── ModelAuthError             key missing or rejected (401/403)          (fatal)
    │   ├── ModelRateLimitError        429 after every retry
    │   ├── ModelServerError           5xx after every retry
    │   ├── ModelTimeoutError          no answer within the request timeout, every try
    │   ├── ModelRequestError          any other 4xx: the request itself is wrong
    │   └── ModelResponseError         malformed JSON or no choices
    │       └── EmptyResponseError         the model answered with no text and no tool call
    ├── RewardError                a reward function raised
    │   └── VerdictError               a judge's verdict could not be read
    ├── EnvironmentHookError       an environment hook (env_response, is_done, ...) raised
    ├── InvalidAction              a signal: the model's action cannot be played; it is told why (also a ValueError)
    │   ├── InvalidGuess               a guessing game reads no playable guess in the reply
    │   ├── IllegalMove                a game's rules refuse the move
    │   └── BadToolCall                a tool call cannot be run as made (unknown tool, bad arguments)
    ├── ToolServerError            an MCP tool server did not start, clashed, or died  (fatal)
    ├── SandboxError               code cannot be run safely here, or a closed sandbox was used (fatal)
    ├── VLLMServerError            the vLLM rollout server did not start or refused new weights (fatal)
    ├── TrainingError              training cannot go on (a loss that is not finite, ...)  (fatal)
    └── EmbeddedModelError         the embedded llama.cpp server could not be started

Each error that ends up on a rollout has a short stable `kind` used to count errors in
summaries. A *fatal* error means every other rollout would fail the same way, so the
runner stops the run (results so far stay on disk) instead of recording thousands of
copies. OpenAI SDK exceptions are translated into this tree in one place:
`lmgym.clients.openai.translate_error`.

`InvalidAction` and its kinds are not failures but signals an environment author raises
inside a game's `judge` or `play`, or a tool: the environment catches them and tells the
model why, and the episode goes on. One that escapes to the loop was raised where nothing
catches it, which is the environment's bug: `passes_through` says which errors a hook
wrapper lets through unchanged and which it reports as the environment's.
"""

from __future__ import annotations


class LmgymError(Exception):
    kind = "error"
    fatal = False


class UsageError(LmgymError):
    kind = "usage"


class EnvironmentNotFoundError(UsageError):
    kind = "environment_not_found"


class DatasetError(UsageError):
    kind = "dataset"


class ResultsFileError(UsageError):
    kind = "results_file"


class EnvironmentArgumentError(UsageError, ValueError):
    """An argument `load_environment` refused. Also a ValueError, which is how environment
    authors refuse a value, so code catching that keeps working."""

    kind = "environment_argument"


class ModelError(LmgymError):
    kind = "model"


class ModelConnectionError(ModelError):
    kind = "connection"
    fatal = True


class ModelAuthError(ModelError):
    kind = "auth"
    fatal = True


class ModelRateLimitError(ModelError):
    kind = "rate_limit"


class ModelServerError(ModelError):
    kind = "server"


class ModelTimeoutError(ModelError):
    kind = "timeout"


class ModelRequestError(ModelError):
    kind = "bad_request"


class ModelResponseError(ModelError):
    kind = "bad_response"


class EmptyResponseError(ModelResponseError):
    """Not retried: it is data about the model, recorded on the rollout."""

    kind = "empty_response"


class RewardError(LmgymError):
    kind = "reward"


class VerdictError(RewardError):
    kind = "verdict"


class EnvironmentHookError(LmgymError):
    kind = "environment"


class InvalidAction(LmgymError, ValueError):
    """The model's action cannot be played; the message says why, and the model is told.
    Also a ValueError, as these signals were before they joined the tree."""

    kind = "invalid_action"


class InvalidGuess(InvalidAction):
    """A guessing game's `judge` finds no guess it can play in the reply."""

    kind = "invalid_guess"


class IllegalMove(InvalidAction):
    """A multi-agent game's `play` refuses the seat's move."""

    kind = "illegal_move"


class BadToolCall(InvalidAction):
    """A tool call cannot be run as the model made it (unknown tool, bad arguments, ...)."""

    kind = "bad_tool_call"


class ToolServerError(LmgymError):
    """Fatal: every later rollout would meet the same broken tools."""

    kind = "tool_server"
    fatal = True


class SandboxError(LmgymError):
    """Fatal: a machine that cannot isolate code for one rollout cannot for any."""

    kind = "sandbox"
    fatal = True


class VLLMServerError(LmgymError):
    kind = "vllm_server"
    fatal = True


class TrainingError(LmgymError):
    """Fatal: the training run cannot go on (a loss that is not finite); the message says where it stopped."""

    kind = "training"
    fatal = True


class EmbeddedModelError(LmgymError):
    kind = "embedded_model"


def passes_through(exc: BaseException) -> bool:
    """Whether a hook wrapper lets `exc` through unchanged: lmgym's own errors (a model,
    tool server or sandbox failure) keep their kind; anything else, an escaped
    `InvalidAction` included, is reported as the environment's failure."""
    return isinstance(exc, LmgymError) and not isinstance(exc, InvalidAction)
