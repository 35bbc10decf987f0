"""Models named by Hugging Face hub id (`org/name`), read through the Hugging Face cache.

The cache is found as huggingface_hub finds it (`HF_HUB_CACHE`, else `HF_HOME/hub`, ...)
and `HF_HUB_OFFLINE` honoured, both read when a model is loaded rather than when
huggingface_hub was imported, so a test (or a user) can point them elsewhere at run time.
Offline, an uncached id is a `UsageError` that says how to fetch it; every other failure
names the id and the revision. A model that ships its own code loads only when the user
allows it (`model.trust_remote_code`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmgym.errors import UsageError


def raise_if_remote_code(exc: Exception, label: str) -> None:
    """transformers refuses a model that ships its own code (`auto_map`) unless told to trust
    it, with a ValueError naming its own argument; this says which lmgym setting that is."""
    if isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
        raise UsageError(
            f"model {label} ships its own Python code (its config's auto_map), which lmgym runs only when you "
            f"allow it: set model.trust_remote_code = true (--model.trust_remote_code true) if you trust its authors"
        ) from exc


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now: huggingface_hub reads it once, on import."""
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it, but read now rather than on its
    import: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (a branch, tag or commit; None =
    main) holding its config, or None; never touches the network."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision), str):
        return None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except OSError:
        return None


def _hub_label(repo_id: str, revision: str | None) -> str:
    return f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def _how_to_fetch(repo_id: str, revision: str | None) -> str:
    command = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    return (
        f"fetch it on a machine with internet (`{command}`; `huggingface-cli download` with an older "
        f"huggingface_hub) and copy its cache here, or point HF_HOME (or HF_HUB_CACHE) at a cache that holds it"
    )


def from_hub(auto: Any, repo_id: str, *, revision: str | None = None, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """`auto.from_pretrained` of `repo_id` through the Hugging Face cache, with every failure a
    UsageError naming the id and the revision. Offline, the cached snapshot folder is read as
    a directory: transformers given a hub id still asks the hub for some files (a LoRA
    adapter's config) unless HF_HUB_OFFLINE was set before it was imported."""
    cache, offline, label = hub_cache_dir(), hub_offline(), _hub_label(repo_id, revision)
    source: str | Path = repo_id
    options: dict[str, Any] = {"revision": revision, "cache_dir": cache}
    if offline:
        snapshot = cached_snapshot(repo_id, revision, cache)
        if snapshot is None:
            raise UsageError(
                f"model {label} is not a local directory, nor a Hugging Face hub model in the cache at {cache}; "
                f"HF_HUB_OFFLINE is set, so nothing is downloaded: {_how_to_fetch(repo_id, revision)}"
            )
        source, options = snapshot, {}
    try:
        loaded = auto.from_pretrained(source, **options, local_files_only=offline, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        raise_if_remote_code(exc, label)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"model {label}: cannot load it from the Hugging Face hub or its cache at {cache} ({reason}); "
            f"{_how_to_fetch(repo_id, revision)}"
        ) from exc
    config = getattr(loaded, "config", None)
    if config is not None:
        config._name_or_path = repo_id  # as loading by id names it (a LoRA adapter records its base by this)
    return loaded
