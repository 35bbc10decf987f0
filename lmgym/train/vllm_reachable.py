"""Whether the vLLM servers a run samples from answer: `lmgym train --nproc N` asks once
before it starts any process (`lmgym.train.launch`), and every rank asks again once it
runs (`lmgym.train.session.require_reachable`: on other machines, or later, the answer can
differ). No torch here, so the launcher stays quick."""

from __future__ import annotations

from lmgym.clients.http import http as _http


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why `url` does not answer as a vLLM server would (`GET /v1/models`); None when it does."""
    try:
        with _http.Client(timeout=timeout) as probe:
            status = probe.get(f"{url}/v1/models").status_code
    except _http.TransportError as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return None if status == 200 else f"GET /v1/models answered HTTP {status}"


def unreachable_message(checks: list[tuple[int, str, str | None]]) -> str | None:
    """One message for every (rank, url, problem) whose server did not answer; None when
    all did. It names each URL once, with the ranks that could not reach it."""
    failed: dict[str, tuple[list[int], str]] = {}
    for rank, url, problem in checks:
        if problem is not None:
            failed.setdefault(url, ([], problem))[0].append(rank)
    if not failed:
        return None
    parts = [f"{url} from rank {', '.join(map(str, ranks))} ({problem})" for url, (ranks, problem) in failed.items()]
    return (
        f"no vLLM server answers at {'; '.join(parts)}: start it, or fix engine.base_url "
        f"(every trainer rank must reach the server it samples from)"
    )


def server_for_rank(servers: list[str], rank: int) -> str:
    """The server rank `rank` samples from: the servers are dealt out in turn."""
    return servers[rank % len(servers)]


def rank_checks(servers: list[str], processes: int, timeout: float = 10.0) -> list[tuple[int, str, str | None]]:
    """(rank, its server, problem) for each of `processes` ranks on this machine, asking
    each server once."""
    problems = {url: unreachable(url, timeout) for url in dict.fromkeys(servers)}
    mine = [server_for_rank(servers, rank) for rank in range(processes)]
    return [(rank, url, problems[url]) for rank, url in enumerate(mine)]
