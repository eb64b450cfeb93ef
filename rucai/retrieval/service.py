"""A small HTTP retrieval service (stdlib only) and its client.

  POST /search   {"queries": [...], "k": 3} -> {"results": [[{id, title, text, score}, ...], ...]}
  POST /queries  the authors' protocol: {"queries": [...], "k": 3} -> {"answers": [["title\\ntext", ...]]}
  GET  /health   {"ok": true, "kind": ..., "num_passages": ...}

One request carries a batch of queries, answered with one batched index call. Binds 127.0.0.1
unless told otherwise (the service has no authentication).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rucai.errors import UserError
from rucai.retrieval.base import Passage, Retriever, register_retriever

log = logging.getLogger(__name__)

MAX_K = 100
MAX_BATCH = 4096


class _Handler(BaseHTTPRequestHandler):
    retriever: Retriever
    lock: threading.Lock

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request at debug level
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, code: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/health":
            n = len(getattr(self.retriever, "passages", []))
            self._send(200, {"ok": True, "kind": self.retriever.kind, "num_passages": n})
        else:
            self._send(404, {"error": f"unknown path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.rstrip("/")
        if path not in ("/search", "/queries"):
            self._send(404, {"error": f"unknown path {self.path}; use /search or /queries"})
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            queries = req.get("queries")
            if isinstance(queries, str):
                queries = [queries]
            if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                raise ValueError("'queries' must be a list of strings")
            if len(queries) > MAX_BATCH:
                raise ValueError(f"at most {MAX_BATCH} queries per request")
            k = int(req.get("k", 3))
            if not 1 <= k <= MAX_K:
                raise ValueError(f"'k' must be in [1, {MAX_K}]")
        except (ValueError, json.JSONDecodeError) as e:
            self._send(400, {"error": str(e)})
            return
        with self.lock:  # the index objects are not thread-safe
            results = self.retriever.search(queries, k)
        if path == "/search":
            self._send(200, {"results": [[p.to_dict() for p in r] for r in results]})
        else:
            self._send(200, {"answers": [[p.contents for p in r] for r in results]})


def make_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (`server.server_address`)."""
    handler = type("Handler", (_Handler,), {"retriever": retriever, "lock": threading.Lock()})
    return ThreadingHTTPServer((host, int(port)), handler)


class BackgroundServer:
    """`with BackgroundServer(retriever) as url:` serves on 127.0.0.1 in a daemon thread."""

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = make_server(retriever, host, port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@register_retriever("http", url_schemes=("http://", "https://"))
class HTTPRetriever(Retriever):
    """Client for the service: the same `search()` as an in-process index."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = float(timeout)

    def _post(self, path: str, obj: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise UserError(f"retrieval service {self.url}{path} answered {e.code}: {e.read().decode()[:200]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise UserError(f"retrieval service {self.url} unreachable ({e}); start it with "
                            f"`python -m rucai.retrieval serve --index <dir>`") from None

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        if not queries:
            return []
        res = self._post("/search", {"queries": list(queries), "k": int(k)})["results"]
        return [[Passage(**p) for p in r] for r in res]

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=self.timeout) as r:
            return json.loads(r.read())
