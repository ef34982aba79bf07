"""Searching everything a run left behind for credentials, in every form they travel in.

A key is not only itself on the wire: HTTP Basic sends base64("username:key"), a token goes
out as `Bearer <token>`, storage clients hold access-key pairs. A leak check that looks
for one literal string misses the others, so `secret_forms` lists every form of the
credentials a scenario actually used, and `assert_no_leak` looks for each of them in
every file written (run folders, stores, downloads, a Prefect server's database and log),
in the texts a run printed, and in what a Prefect server holds (flow and task run
parameters, logs, artifacts), read through its API.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import httpx


def secret_forms(
    *, username: str | None = None, key: str | None = None, token: str | None = None, **others: str
) -> dict[str, str]:
    """name → value of every form in which these credentials could leak (`others`: e.g. storage keys)."""
    forms: dict[str, str] = {}
    if key:
        forms["key"] = key
    if username and key:
        forms["HTTP Basic base64(username:key)"] = base64.b64encode(f"{username}:{key}".encode()).decode()
    if token:
        forms["token"] = token
    forms.update({name: value for name, value in others.items() if value})
    return forms


def written_files(*roots: Path) -> list[Path]:
    """Every file under `roots` (those that exist)."""
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def sqlite_files(database_url: str) -> list[Path]:
    """The SQLite database of a `sqlite+aiosqlite:///PATH` URL, with its WAL and journal files."""
    path = Path(database_url.split(":///", 1)[1])
    return sorted(path.parent.glob(path.name + "*"))


def server_records(api_url: str, page: int = 200) -> dict[str, str]:
    """What a Prefect server holds about runs, as text: every flow run's and task run's parameters and
    inputs, every log message, every artifact's data and description (all pages)."""
    texts: dict[str, str] = {}
    for kind in ("flow_runs", "task_runs", "logs", "artifacts"):
        offset = 0
        while True:
            rows = httpx.post(f"{api_url}/{kind}/filter", json={"limit": page, "offset": offset}, timeout=60)
            rows.raise_for_status()
            batch = rows.json()
            for row in batch:
                texts[f"{kind}/{row.get('id')}"] = json.dumps(row, default=str)
            if len(batch) < page:
                break
            offset += page
    return texts


def find_leaks(forms: dict[str, str], files: Iterable[Path], texts: dict[str, str]) -> list[str]:
    """'<form> in <where>' for every form found in a file's bytes or in a text."""
    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [f"{name} in {path}" for name, value in forms.items() if value.encode() in data]
    for where, text in texts.items():
        leaks += [f"{name} in {where}" for name, value in forms.items() if value in text]
    return leaks


def assert_no_leak(forms: dict[str, str], files: Iterable[Path], texts: dict[str, str]) -> None:
    assert forms, "no secret to look for"
    files = list(files)
    assert files and texts, "nothing to search: the scenario wrote or printed nothing"
    leaks = find_leaks(forms, files, texts)
    assert not leaks, f"credentials leaked: {leaks[:10]}"
