"""Secrets handed to a source for the duration of a stage, in memory only.

A secret that lives outside the config (e.g. a Prefect Secret block named in
`data.source.secret_block`) is resolved by `pipelines` — core and plugins never
import Prefect — and supplied here around the stage that needs it:

    with secrets.supplied("prefect-secret/kaggle-creds", value):
        execute_stage(...)

Nothing here is written anywhere: not to the config, summary.json, Prefect
parameters or logs. `redact` scrubs known secret values (and signed URL query
strings) from a message before it is raised or logged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_values: dict[str, list[Any]] = {}


def secret_ref(block_name: str) -> str:
    """The name a Prefect Secret block's value is supplied under."""
    return f"prefect-secret/{block_name}"


@contextmanager
def supplied(name: str, value: Any) -> Iterator[None]:
    """Make `value` available as `lookup(name)` inside the block (nested supplies stack)."""
    with _lock:
        _values.setdefault(name, []).append(value)
    try:
        yield
    finally:
        with _lock:
            stack = _values.get(name, [])
            if stack:
                stack.pop()
            if not stack:
                _values.pop(name, None)


def lookup(name: str) -> Any | None:
    with _lock:
        stack = _values.get(name)
        return stack[-1] if stack else None


_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str, secret_values: Iterable[str | None] = ()) -> str:
    """`text` with every secret value replaced by *** and URL query strings (signed URLs) dropped."""
    text = _URL_QUERY.sub(r"\1?…", str(text))
    for value in secret_values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text
