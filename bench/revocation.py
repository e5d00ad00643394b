"""How soon a revoked token is refused, side by side: on the replica that revoked it (through
``DELETE /admin/tokens/{name}``), on a second replica of the same store, and on a replica after
``pmx tokens revoke`` (the CLI writes the store directly).

Two uvicorns on one SQLite data home. Each round makes a fresh operator token, has both replicas
accept it (so each holds it in its token cache), revokes it, and then polls every 5 ms until it is
refused. Lags are measured from the moment the revocation returned.

The last line printed is one JSON object of the figures (targets: refused on the next request
where revoked, at most 1 s on the others).

    .venv/bin/python bench/revocation.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from promotion_latency import ADMIN, REPO, child_env, start_api, stop_all


def make_token(home: Path, name: str) -> str:
    made = subprocess.run([sys.executable, "-m", "pmx.cli", "tokens", "create", "--role", "operator",
                           "--name", name], env=child_env(home), cwd=REPO, capture_output=True, text=True,
                          check=True)
    return json.loads(made.stdout)["token"]


def status(url: str, token: str) -> int:
    return httpx.get(f"{url}/config", headers={"Authorization": f"Bearer {token}"}, timeout=10,
                     trust_env=False).status_code


def lag_until_refused(url: str, token: str, since: float, limit: float = 10.0) -> float:
    """Seconds from ``since`` until ``url`` refuses ``token`` (401)."""
    while time.monotonic() - since < limit:
        if status(url, token) == 401:
            return time.monotonic() - since
        time.sleep(0.005)
    raise RuntimeError(f"{url} still accepted a revoked token after {limit} s")


def summary(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {"p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="pmx-bench-revocation-") as scratch:
        home, logs = Path(scratch) / "home", Path(scratch) / "logs"
        logs.mkdir(parents=True)
        first = start_api(home, logs)
        second = start_api(home, logs)
        try:
            next_request_refused, other, cli = 0, [], []
            admin = httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
                                 trust_env=False)
            for n in range(rounds):
                token = make_token(home, f"bench-api-{n}")
                assert status(first.url, token) == status(second.url, token) == 200
                assert admin.delete(f"/admin/tokens/bench-api-{n}").status_code == 200
                revoked = time.monotonic()
                next_request_refused += status(first.url, token) == 401
                other.append(lag_until_refused(second.url, token, revoked))

                token = make_token(home, f"bench-cli-{n}")
                assert status(first.url, token) == 200
                command = [sys.executable, "-m", "pmx.cli", "tokens", "revoke", f"bench-cli-{n}"]
                subprocess.run(command, env=child_env(home), cwd=REPO, check=True, capture_output=True)
                cli.append(lag_until_refused(first.url, token, time.monotonic()))
        finally:
            stop_all([first, second])
    figures = {"rounds": rounds, "same_replica_refused_on_next_request": next_request_refused,
               "other_replica_lag": summary(other), "cli_revoke_lag": summary(cli)}
    print(f"revoked through the API: refused on the next request there in {next_request_refused}/{rounds}; "
          f"on the other replica after p50 {figures['other_replica_lag']['p50_s']} s, "
          f"max {figures['other_replica_lag']['max_s']} s; after `pmx tokens revoke`: max "
          f"{figures['cli_revoke_lag']['max_s']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
