"""The development stack: the embedded EHR sandbox plus the app, on 127.0.0.1.

Used by ``make run`` (``python -m app.run``), ``make demo`` and the
integration tests, so all three exercise the same wiring. Development only:
the secret key is generated per data dir, the sandbox holds synthetic data.
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from app import create_app
from app.config import load_settings
from app.smart.backend import ClientKey

_UNLOGGED = frozenset({"/api/index-status", "/healthz"})


class QuietHandler(WSGIRequestHandler):
    """Access log without query strings: /callback?code=... must never reach a log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        if path in _UNLOGGED and str(code).startswith("2"):
            return  # polled every half second by the chart page; logging each poll buries the rest
        self.log("info", '"%s %s" %s %s', self.command, path, code, size)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_secret(data_dir: Path) -> str:
    path = data_dir / "dev_secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


BACKEND_CLIENT_ID = "draft-agent-backend"


def backend_key(data_dir: Path) -> Path:
    """The dev stack's Backend Services key (ES384), registered with the sandbox at start."""
    path = data_dir / "backend_key.pem"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ClientKey.generate("ES384").pem())
        path.chmod(0o600)
    return path


@dataclass
class Stack:
    sandbox: object  # sandbox.Sandbox
    app_url: str
    server: BaseWSGIServer
    thread: threading.Thread
    flask_app: object

    @property
    def launch_url(self) -> str:
        return self.app_url + "/launch"

    def launch_link(self, user: str = "prac-onc-1", patient: str = "pat-onc-01") -> str:
        return self.sandbox.launch_link(user=user, patient=patient)  # type: ignore[attr-defined]

    @property
    def backend_key_path(self) -> Path:
        return Path(self.sandbox.data_dir).parent / "backend_key.pem"  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.flask_app.extensions["smart_draft_web"].join_workers()  # type: ignore[attr-defined]
        self.sandbox.stop()  # type: ignore[attr-defined]


def start_stack(data_dir: Path, *, app_port: int = 0, sandbox_port: int = 0,
                token_lifetime: int = 300, client_scopes: str | None = None,
                app_overrides: dict | None = None) -> Stack:
    """Start sandbox and app; the app's client is registered with its real redirect URI."""
    from sandbox import Sandbox

    data_dir = Path(data_dir).resolve()
    app_port = app_port or free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    redirect_uri = app_url + "/callback"
    client: dict = {"client_id": "smart-draft-agent", "type": "public", "redirect_uris": [redirect_uri]}
    if client_scopes is not None:
        client["scopes"] = client_scopes
    key_path = backend_key(data_dir)
    backend = {"client_id": BACKEND_CLIENT_ID, "type": "backend",
               "jwks": ClientKey.load(key_path).public_jwks()}
    sb = Sandbox(data_dir=data_dir / "sandbox", port=sandbox_port, app_launch_url=app_url + "/launch",
                 token_lifetime=token_lifetime, clients=[client, backend])
    sb.start()
    try:
        settings = load_settings(
            fhir_base_url=sb.fhir_base, allowed_iss=sb.fhir_base, redirect_uri=redirect_uri,
            data_dir=data_dir / "app", secret_key=dev_secret(data_dir), server_profile="sekmet",
            **(app_overrides or {}))
        flask_app = create_app(settings)
        flask_app.extensions["smart_draft"].warm_up()  # loads while the browser is still launching
        server = make_server("127.0.0.1", app_port, flask_app, threaded=True,
                             request_handler=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="app-server", daemon=True)
        thread.start()
    except BaseException:
        sb.stop()
        raise
    return Stack(sandbox=sb, app_url=app_url, server=server, thread=thread, flask_app=flask_app)
