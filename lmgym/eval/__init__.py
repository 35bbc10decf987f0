"""Evaluation: an environment against any model behind an OpenAI-compatible API.

A run (`run.EvalRun`, settings in `config.EvalConfig`) streams each rollout to
results.jsonl as it finishes (`runner`, `results`), resumes from what is on disk, and is
summarised (`summary`), audited for reward hacking (`audit/`), viewed (`report`) and
exported (`export`) from its files alone, so every one of them works on a run still
being written or one copied from another machine."""
