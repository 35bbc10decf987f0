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
    ├── EnvironmentHookError        an environment hook (env_response, is_done, ...) raised
    ├── ToolServerError            an MCP tool server did not start, clashed, or died  (fatal)
    ├── SandboxError               code cannot be run safely here, or a closed sandbox was used (fatal)
    ├── VLLMServerError            the vLLM rollout server did not start or refused new weights (fatal)
    └── EmbeddedModelError         the embedded llama.cpp server could not be started

Each error that ends up on a rollout has a short stable `kind` used to count errors in
summaries. A *fatal* error means every other rollout would fail the same way, so the
runner stops the run (results so far stay on disk) instead of recording thousands of
copies. OpenAI SDK exceptions are translated into this tree in one place:
`lmgym.clients.openai.translate_error`.
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


class EmbeddedModelError(LmgymError):
    kind = "embedded_model"
