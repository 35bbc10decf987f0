"""Recorded traffic into datasets: chat SFT rows, or an environment `lmgym eval` can run.

Traces are the JSON lines `lmgym.flywheel.proxy` writes (its docstring is the format).
`select_traces` reads them, drops what cannot or should not become data, and counts why:

    malformed       a line that is not a trace (a torn last line, an edited file), or a
                    trace with a field of the wrong type (a list for `model`, a string
                    for `tool_calls`, a message without a `role`): a warning names the
                    file, line and field
    error           an HTTP error, or a stream that broke (its reply is partial)
    not_chat        /v1/completions: a raw text prompt is not a chat conversation
    empty           a reply with neither text nor tool calls
    non_text        a message with image or audio parts (text parts are joined)
    session, model, date, finish_reason    the user's filters
    duplicate       the same (prompt, completion, tools) as a trace kept earlier
    rescore_error, below_min_reward        re-scoring with an environment's rubric

Error traces are always dropped (there is no `--include-errors`): an error trace has no
complete reply, so neither dataset could use it.

A package of parts, one concept each: `read` (files, shape checks, filters, selection),
`messages` (messages as a text dataset keeps them), `rescore` (scoring with a rubric),
`dataset_io` (rows written and read back) and `replay` (the `traces` environment).

Two datasets come out of the kept traces:

* **sft** rows `{"prompt": messages, "completion": [assistant message]}` plus metadata
  columns `trace_id`, `session_id`, `model`, `tools` (JSON text), `finish_reason`,
  `started_at` (and `reward` when re-scored): what `lmgym sft --sft.data FILE.jsonl`
  reads (it reads JSONL only) and the conversational format of TRL's SFTTrainer.
* **env** rows `{"id": trace id, "prompt": messages, "answer": recorded text, "info":
  {...}}`: `load_traces_environment(path)` (the bundled environment `traces`, so
  `lmgym eval traces -a '{"path": "OUT"}'`) replays each prompt and compares the new
  reply with the recorded one.

Messages keep only `role`, `content`, `tool_calls`, `tool_call_id` and `name` (what
chat templates read); the `developer` role becomes `system`, which chat templates know.
JSONL rows are written as they are; HF (`save_to_disk`) and parquet hold messages as
Arrow structs, so a key a message lacks reads back as null: `clean_message` drops those.

Re-scoring (`rescore`) scores each kept trace as a one-turn rollout with an
environment's rubric. Real traffic has no reference answer, so only reward functions
that do without one can score it (format rewards, judges whose template does not name
`{answer}`, guards); a rubric that needs the answer is refused with the names of the
functions that do.
"""

from __future__ import annotations

from lmgym.flywheel.traces.dataset_io import (
    FORMATS,
    env_row,
    load_rows,
    mixed_column,
    output_format,
    save_rows,
    sft_row,
)
from lmgym.flywheel.traces.messages import (
    MESSAGE_KEYS,
    NonTextContent,
    clean_message,
    normalise_message,
    reply_message,
    text_of,
    tools_text,
)
from lmgym.flywheel.traces.read import (
    CHAT_ENDPOINT,
    DROP_REASONS,
    JSON_KINDS,
    TRACE_FILE,
    Counts,
    MalformedTrace,
    Selected,
    TraceFilter,
    check_message,
    check_tool_calls,
    check_trace,
    dedupe_key,
    expect,
    parse_when,
    read_traces,
    select_traces,
    trace_files,
    usable,
)
from lmgym.flywheel.traces.replay import (
    REFERENCE_TEMPLATE,
    TracesEnv,
    calls_of,
    load_traces_environment,
    matches_recorded,
    normalise_space,
)
from lmgym.flywheel.traces.rescore import (
    answer_functions,
    check_rescorable,
    keep_rewarded,
    rescore,
    trace_rollout,
)

__all__ = [
    "answer_functions",
    "calls_of",
    "CHAT_ENDPOINT",
    "check_message",
    "check_rescorable",
    "check_tool_calls",
    "check_trace",
    "clean_message",
    "Counts",
    "dedupe_key",
    "DROP_REASONS",
    "env_row",
    "expect",
    "FORMATS",
    "JSON_KINDS",
    "keep_rewarded",
    "load_rows",
    "load_traces_environment",
    "MalformedTrace",
    "matches_recorded",
    "MESSAGE_KEYS",
    "mixed_column",
    "NonTextContent",
    "normalise_message",
    "normalise_space",
    "output_format",
    "parse_when",
    "read_traces",
    "REFERENCE_TEMPLATE",
    "reply_message",
    "rescore",
    "save_rows",
    "select_traces",
    "Selected",
    "sft_row",
    "text_of",
    "tools_text",
    "TRACE_FILE",
    "trace_files",
    "trace_rollout",
    "TraceFilter",
    "TracesEnv",
    "usable",
]
