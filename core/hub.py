"""Files of the Hugging Face Hub, read from the local cache first, fetched only when the Hub answers.

timm keeps its weights on the Hub and finds them through huggingface_hub's cache
(`$HF_HOME/hub`, or `$HF_HUB_CACHE`), exactly as this module does. What differs is
the unhappy path: with neither a cached copy nor a network, huggingface_hub retries
every candidate file for about a minute before it gives up with a traceback. Here a
file that is not cached is looked for on the network only after one short check that
the Hub's host answers at all (`HF_HUB_OFFLINE=1` skips even that), so a machine
without a network hears it in one line, in a second or two.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from graftflow.core.errors import ConfigError

REACHABLE_TIMEOUT = 3.0  # seconds for the DNS lookup + TCP connect of the reachability check
_TRUE = ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """The hub cache huggingface_hub uses, from the environment as it is now (tests and notebooks change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> str | None:
    """The cached copy of `filename` in `repo_id`, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(), revision=revision)
    return found if isinstance(found, str) else None


def reachable(url: str, timeout: float = REACHABLE_TIMEOUT) -> bool:
    """Whether the host of `url` (or the HTTPS proxy in between) accepts a TCP connection within `timeout`.

    The lookup runs in a daemon thread because `getaddrinfo` has no timeout of its own:
    a resolver that hangs must not hold the caller longer than `timeout`.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy or url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return False
    answered: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answered and answered[0])


def hub_file(
    repo_id: str,
    filenames: list[str],
    *,
    revision: str | None,
    field: str,
    what: str,
    download: bool = True,
) -> str | None:
    """A local path to the first of `filenames` the repo has: from the cache, else downloaded.

    With `download=False` nothing is fetched: the cached path, or None when the Hub can
    be reached (the caller fetches later). Neither cached nor reachable: a ConfigError
    naming `what`, where it was looked for, and how to supply it.
    """
    for name in filenames:
        path = cached_file(repo_id, name, revision)
        if path is not None:
            return path
    if offline() or not reachable(endpoint()):
        why = "HF_HUB_OFFLINE is set" if offline() else f"{urlparse(endpoint()).hostname} cannot be reached"
        raise ConfigError(
            f"{field}: {what} (Hugging Face repo '{repo_id}', {' or '.join(filenames)}): not in the "
            f"Hugging Face cache {cache_dir()}, and {why}; give a local file (model.pretrained: "
            f"/path/to/model.safetensors) or populate the cache (HF_HOME) on a machine with a network"
        )
    if not download:
        return None
    return _download(repo_id, filenames, revision, field, what)


def _download(repo_id: str, filenames: list[str], revision: str | None, field: str, what: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir())
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError:
            raise ConfigError(f"{field}: {what}: there is no Hugging Face repo '{repo_id}'") from None
        except (HfHubHTTPError, OSError) as exc:
            raise ConfigError(f"{field}: {what}: downloading from '{repo_id}' failed: {_first_line(exc)}") from None
    raise ConfigError(f"{field}: {what}: Hugging Face repo '{repo_id}' has none of {', '.join(filenames)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
