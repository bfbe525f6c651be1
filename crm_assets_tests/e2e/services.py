"""Real Dagster services for the end-to-end test: processes in their own groups, and a GraphQL helper."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# Long enough for a cold import on a busy 2-core CI machine, short enough to fail a hung test.
STARTUP_TIMEOUT_S = 180.0
STOP_GRACE_S = 15.0


class ServiceError(AssertionError):
    """A service did not come up or answered with an error; the message carries its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = STARTUP_TIMEOUT_S, interval: float = 1.0) -> T:
    """Poll until probe returns something other than None; the last exception explains a timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error, result = exc, None
        if result is not None:
            return result
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


@dataclass
class Service:
    """One process, started in a new session so its whole tree (run workers included) stops together."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ServiceError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_GRACE_S)
        # Children that outlived their leader (run workers) are still in the group.
        _signal_group(self.process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class ServiceGroup:
    """Starts services and stops every one of them, newest first."""

    env: Mapping[str, str]
    cwd: Path
    log_dir: Path
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> Service:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=self.cwd,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = Service(name, process, log_path)
        self.services.append(service)
        return service

    def check_alive(self) -> None:
        for service in self.services:
            service.check_alive()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ({s.log_path}) ---\n{s.log_tail()}" for s in self.services)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()


class GraphQL:
    """POSTs to the webserver's /graphql and fails loudly on transport or GraphQL errors."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._client = httpx.Client(base_url=base_url, timeout=60.0)

    def close(self) -> None:
        self._client.close()

    def server_info(self) -> dict[str, Any] | None:
        response = self._client.get("/server_info", timeout=5.0)
        return response.json() if response.status_code == 200 else None

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self._client.post("/graphql", json={"query": query, "variables": dict(variables or {})})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise ServiceError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data
