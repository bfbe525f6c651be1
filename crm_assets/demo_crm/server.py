"""The demo CRM as a real HTTP server on loopback (stdlib ThreadingHTTPServer, keep-alive).

`serve_demo_crm(demo)` runs it in a background thread for tests; `serve_forever(...)` backs the
`crm-assets demo-crm` command. Each request is turned into an `httpx.Request` and answered by
`DemoCrm.handle`, so the in-process transport and the server behave the same; the drop fault
closes the connection without an answer and the slow fault really waits.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from crm_assets.demo_crm.config import DEMO_API_KEY, DemoConfig
from crm_assets.demo_crm.crm import BASE_PATH, DemoCrm
from crm_assets.demo_crm.data import DEMO_DOMAINS

# Headers the server writes itself.
_HOP_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "keep-alive", "date", "server"})


class DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not delay shutdown
    request_queue_size = 128  # several clients opening connections at once

    def __init__(self, address: tuple[str, int], demo: DemoCrm) -> None:
        self.demo = demo
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crm-assets-demo-crm"
    wbufsize = -1  # buffer headers and body into one write ...
    disable_nagle_algorithm = True  # ... and send it at once
    server: DemoHTTPServer

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        request = httpx.Request(
            self.command,
            f"http://{self.headers.get('Host') or 'localhost'}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "content-length"],
            content=body,
        )
        try:
            response = self.server.demo.handle(request, over_http=True)
        except httpx.RemoteProtocolError:
            self.close_connection = True  # the drop fault: hang up without an answer
            return
        try:
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out on a slow answer)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are in DemoCrm.request_log; the per-request stderr line would only slow it down."""


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


@contextmanager
def serve_demo_crm(demo: DemoCrm, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `demo` over HTTP in a background thread; yields the base URL (`.../crm/sales`)."""
    server = DemoHTTPServer((host, port), demo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{_url_host(host)}:{server.server_address[1]}{BASE_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_forever(
    host: str,
    port: int,
    accounts: int | None,
    contacts: int | None,
    deals: int | None,
    seed: int | None,
) -> int:
    """`crm-assets demo-crm`: serve until Ctrl-C. Prints the URL and the (public, demo-only) API key."""
    defaults = DemoConfig()
    config = DemoConfig(
        accounts=defaults.accounts if accounts is None else accounts,
        contacts=defaults.contacts if contacts is None else contacts,
        deals=defaults.deals if deals is None else deals,
        seed=defaults.seed if seed is None else seed,
    )
    demo = DemoCrm(config)
    started = time.perf_counter()
    demo.store.warm_up()
    try:
        server = DemoHTTPServer((host, port), demo)
    except OSError as exc:
        print(f"demo CRM: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    url = f"http://{_url_host(host)}:{server.server_address[1]}{BASE_PATH}"
    sizes = ", ".join(f"{demo.store.data.count(d.name)} {d.name}" for d in DEMO_DOMAINS)
    print(
        f"Demo CRM (Freshsales-compatible) with {sizes} (seed {config.seed}), "
        f"ready in {time.perf_counter() - started:.1f} s\n"
        f"  CRM_BASE_URL={url}\n"
        f"  CRM_API_KEY={DEMO_API_KEY}\n"
        f"Admin: POST {url}/_demo/faults, POST {url}/_demo/touch, GET {url}/_demo/stats. Ctrl-C stops.",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("demo CRM stopped", flush=True)
    finally:
        server.server_close()
    return 0


__all__ = ["DemoHTTPServer", "serve_demo_crm", "serve_forever"]
