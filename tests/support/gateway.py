"""``semcache serve`` as a real process for tests: config written, port read from its output, stopped by SIGTERM.

>>> # with GatewayProcess(tmp_path, upstream_url) as gateway:
>>> #     OpenAI(base_url=gateway.base_url, api_key=gateway.keys["alpha"])
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from semcache._gateway.config import hash_key, new_key
from support.wait import WAIT, wait_until

TENANTS = ("alpha", "beta")
_LISTENING = re.compile(r"listening on (http://\S+)")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _table(name: str, values: dict[str, Any], *, array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{k} = {_toml(v)}" for k, v in values.items() if v is not None)]) + "\n"


class GatewayProcess:
    """A gateway process with fresh keys for tenants ``alpha`` and ``beta`` and an admin key.

    Args:
        directory: where the config and the log go.
        upstreams: ``[[upstreams]]`` tables (name, base_url, models, timeout...).
        cache: the ``[cache]`` table (default: in memory, the packaged MiniLM).
        server: more ``[server]`` settings.
        tenants: more settings per tenant name.
    """

    def __init__(
        self,
        directory: Path,
        upstreams: list[dict[str, Any]],
        *,
        cache: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        tenants: dict[str, dict[str, Any]] | None = None,
        passthrough: dict[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.keys = {name: new_key() for name in TENANTS}
        self.admin_key = new_key("sk-admin-")
        parts = [_table("server", {"port": 0, "admin_key_hashes": [hash_key(self.admin_key)], **(server or {})})]
        parts.append(_table("cache", cache or {}))
        parts += [_table("upstreams", u, array=True) for u in upstreams]
        for name in TENANTS:
            settings = {"name": name, "key_hashes": [hash_key(self.keys[name])], **(tenants or {}).get(name, {})}
            parts.append(_table("tenants", settings, array=True))
        if passthrough:
            parts.append(_table("passthrough", passthrough))
        self.config_path = directory / "gateway.toml"
        self.config_path.write_text("\n".join(parts), encoding="utf-8")
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.output: list[str] = []

    def start(self) -> GatewayProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(self.directory / "gateway.log", "w", encoding="utf-8") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "semcache", "serve", "--config", str(self.config_path)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        found = wait_until(lambda: self._url() or self.process.poll() is not None, WAIT * 2, interval=0.05,
                           what="the gateway to listen")
        if found is True:
            raise RuntimeError(f"the gateway exited: {(self.directory / 'gateway.log').read_text()[-2000:]}")
        self.base_url = f"{found}/v1"
        self.root = str(found)
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def _url(self) -> str | None:
        for line in list(self.output):
            match = _LISTENING.search(line)
            if match:
                return match.group(1)
        return None

    def admin(self) -> httpx.Client:
        """An HTTP client holding the admin key."""
        return httpx.Client(base_url=self.root, headers={"authorization": f"Bearer {self.admin_key}"}, timeout=30)

    def stats(self) -> dict[str, Any]:
        with self.admin() as client:
            return client.get("/admin/stats").json()

    def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM, then wait for the exit (killed if it does not come); the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)  # it ends at EOF, which the exit brought
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()
