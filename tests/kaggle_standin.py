"""A stand-in for Kaggle's API on loopback, for tests that drive the real `kaggle` client.

Nothing in the client is patched: with `KAGGLE_API_ENVIRONMENT=LOCALHOST` (set
before `import kaggle`) the client calls `http://localhost/api/v1/...`, and
`HTTP_PROXY=http://127.0.0.1:PORT` routes those requests here in absolute form
(FACTS.md). `NO_PROXY=127.0.0.1` keeps Prefect's own API traffic direct.

It speaks the wire protocol of kaggle 2.2.4: `POST /v1/<service>/<Method>` with
a camelCase JSON body; downloads answer `302 Location: <blob url>`, and the blob
GET (no auth needed) honours `Range`/`If-Range` and sends `Last-Modified`,
`ETag`, `Content-Length`, `Accept-Ranges`. Scenario switches: reject
credentials, competition rules not accepted (403), unknown names (404), a
queue of statuses to answer per method (one 503, then OK), a blob truncated
once, a blob that stalls half-way (to kill a client mid-download).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

BLOB_HOST = "http://localhost"


@dataclass
class Blob:
    data: bytes
    modified: datetime

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data).hexdigest() + '"'

    @property
    def last_modified(self) -> str:
        return format_datetime(self.modified, usegmt=True)


@dataclass
class Remote:
    """A competition or dataset: its files (as listed) and the archive of all of them."""

    files: dict[str, Blob]
    archive: Blob
    rules_accepted: bool = True


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class KaggleStandIn:
    username: str = "graft-tester"
    key: str = field(default_factory=lambda: "KGLKEY" + secrets.token_hex(12))
    token: str = field(default_factory=lambda: "KGAT_" + secrets.token_hex(16))
    competitions: dict[str, Remote] = field(default_factory=dict)
    datasets: dict[str, Remote] = field(default_factory=dict)
    fail: dict[str, list[int]] = field(default_factory=dict)  # Method name or "blob" → statuses, one per request
    truncate_once: dict[str, int] = field(default_factory=dict)  # blob path → bytes sent before the drop
    stall: dict[str, int] = field(default_factory=dict)  # blob path → bytes sent, then hang until released
    log: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- content ---------------------------------------------------------------------------
    @staticmethod
    def _when(days_ago: float) -> datetime:
        return (datetime.now(UTC) - timedelta(days=days_ago)).replace(microsecond=0)

    def add_competition(
        self,
        name: str,
        files: dict[str, bytes],
        archive: bytes | None = None,
        rules_accepted: bool = True,
        days_ago: float = 30,
    ) -> None:
        when = self._when(days_ago)
        self.competitions[name] = Remote(
            {n: Blob(d, when) for n, d in files.items()},
            Blob(zip_of(files) if archive is None else archive, when),
            rules_accepted,
        )

    def add_dataset(
        self,
        ref: str,
        files: dict[str, bytes],
        archive: bytes | None = None,
        days_ago: float = 30,
        private: bool = False,
    ) -> None:
        when = self._when(days_ago)
        self.datasets[ref] = Remote(
            {n: Blob(d, when) for n, d in files.items()},
            Blob(zip_of(files) if archive is None else archive, when),
            not private,
        )

    def update_competition_file(self, name: str, file: str, data: bytes) -> None:
        """A new version of one file, published now: the listing, the blob and the archive change."""
        remote = self.competitions[name]
        now = self._when(0)
        remote.files[file] = Blob(data, now)
        remote.archive = Blob(zip_of({n: b.data for n, b in remote.files.items()}), now)

    # -- server ----------------------------------------------------------------------------
    def start(self) -> KaggleStandIn:
        standin = self

        class Handler(_Handler):
            state = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> KaggleStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def env(self, auth: str = "basic") -> dict[str, str]:
        """What a process needs to reach this stand-in with the real client (and these credentials)."""
        proxy = f"http://127.0.0.1:{self.port}"
        env = {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }
        if auth == "basic":
            env.update(KAGGLE_USERNAME=self.username, KAGGLE_KEY=self.key)
        elif auth == "token":
            env["KAGGLE_API_TOKEN"] = self.token
        return env

    def calls(self, method: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.log if method is None or e["method"] == method]

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.log.append({**entry, "at": time.monotonic()})

    def _next_failure(self, method: str) -> int | None:
        with self._lock:
            queue = self.fail.get(method)
            return queue.pop(0) if queue else None


class _Handler(BaseHTTPRequestHandler):
    state: KaggleStandIn
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -- helpers -----------------------------------------------------------------------------
    def _path(self) -> str:
        path = urlsplit(self.path).path  # absolute-form (through the proxy) or origin-form
        return path[4:] if path.startswith("/api/v1/") else path

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def _redirect(self, blob_path: str) -> None:
        self.send_response(302)
        self.send_header("Location", f"{BLOB_HOST}{quote(blob_path)}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _auth(self) -> str | None:
        header = self.headers.get("Authorization", "")
        s = self.state
        if header == f"Bearer {s.token}":
            return "bearer"
        if header.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            if user == s.username and key == s.key:
                return "basic"
        return None

    # -- API -----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = self._path()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        method = path.rsplit("/", 1)[-1]
        auth = self._auth()
        self.state._record({"method": method, "path": path, "body": body, "auth": auth})
        if not path.startswith("/v1/"):
            return self._error(404, f"no such endpoint {path}")
        status = self.state._next_failure(method)
        if status is not None:
            return self._error(status, f"stand-in: scripted HTTP {status}")
        if method == "IntrospectToken":
            active = body.get("token") == self.state.token
            return self._json(200, {"active": active, **({"username": self.state.username} if active else {})})
        if auth is None:
            return self._error(401, "Unauthenticated")
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return self._error(404, f"stand-in does not implement {method}")
        handler(body)

    def _competition(self, body: dict) -> tuple[str, Remote] | None:
        name = body.get("competitionName", "")
        remote = self.state.competitions.get(name)
        if remote is None:
            self._error(404, f"Competition {name} not found")
            return None
        return name, remote

    def _dataset(self, body: dict) -> tuple[str, Remote] | None:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        remote = self.state.datasets.get(ref)
        if remote is None:
            self._error(404, f"Dataset {ref} not found")
            return None
        return ref, remote

    @staticmethod
    def _listing(remote: Remote) -> list[dict]:
        return [
            {"name": n, "totalBytes": len(b.data), "creationDate": b.modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
            for n, b in sorted(remote.files.items())
        ]

    def _ListDataFiles(self, body: dict) -> None:
        found = self._competition(body)
        if found:
            self._json(200, {"files": self._listing(found[1])})

    def _DownloadDataFiles(self, body: dict) -> None:
        found = self._competition(body)
        if found and self._rules(*found):
            self._redirect(f"/blobs/c/{found[0]}/{found[0]}.zip")

    def _DownloadDataFile(self, body: dict) -> None:
        found = self._competition(body)
        if found and self._rules(*found):
            name = body.get("fileName", "")
            if name not in found[1].files:
                return self._error(404, f"File {name} not found")
            self._redirect(f"/blobs/c/{found[0]}/files/{name}")

    def _rules(self, name: str, remote: Remote) -> bool:
        if not remote.rules_accepted:
            self._error(403, f"You must accept this competition's rules before you can download files ({name})")
            return False
        return True

    def _ListDatasetFiles(self, body: dict) -> None:
        found = self._dataset(body)
        if found:
            self._json(200, {"datasetFiles": self._listing(found[1])})

    def _GetDatasetMetadata(self, body: dict) -> None:
        found = self._dataset(body)
        if found:
            self._json(200, {"info": {"licenses": [{"name": "CC0-1.0"}]}})

    def _DownloadDataset(self, body: dict) -> None:
        found = self._dataset(body)
        if not found:
            return
        ref, remote = found
        if not remote.rules_accepted:
            return self._error(403, f"Permission denied: dataset {ref} is private")
        name = body.get("fileName")
        if name:
            if name not in remote.files:
                return self._error(404, f"File {name} not found")
            return self._redirect(f"/blobs/d/{ref}/files/{name}")
        self._redirect(f"/blobs/d/{ref}/{ref.split('/')[1]}.zip")

    # -- blobs -------------------------------------------------------------------------------
    def _blob(self, path: str) -> Blob | None:
        parts = unquote(path).split("/")  # ["", "blobs", "c"|"d", ...]
        s = self.state
        if parts[2] == "c":
            remote = s.competitions.get(parts[3])
            rest = parts[4:]
        else:
            remote = s.datasets.get(f"{parts[3]}/{parts[4]}")
            rest = parts[5:]
        if remote is None:
            return None
        if rest and rest[0] == "files":
            return remote.files.get("/".join(rest[1:]))
        return remote.archive

    def do_GET(self) -> None:
        path = unquote(self._path())
        rng = self.headers.get("Range")
        self.state._record({"method": "GET", "path": path, "range": rng, "auth": self._auth()})
        status = self.state._next_failure("blob")
        if status is not None:
            return self._error(status, f"stand-in: scripted HTTP {status}")
        blob = self._blob(path) if path.startswith("/blobs/") else None
        if blob is None:
            return self._error(404, f"no blob at {path}")
        data, start = blob.data, 0
        if_range = self.headers.get("If-Range")
        if rng and rng.startswith("bytes=") and (if_range is None or if_range in (blob.etag, blob.last_modified)):
            start = int(rng[6:].split("-")[0])
        if start >= len(data) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", blob.last_modified)
        self.send_header("ETag", blob.etag)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        s = self.state
        with s._lock:
            cut = s.truncate_once.pop(path, None)
            hang = s.stall.pop(path, None)
        if cut is not None or hang is not None:
            self.wfile.write(body[: cut if cut is not None else hang])
            self.wfile.flush()
            if hang is not None:
                s.stalled.set()
                s.release.wait(120)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)
