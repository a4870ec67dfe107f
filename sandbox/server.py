"""``Sandbox``: sekmet-fhir + the SMART authorization server + FHIR proxy + launcher.

One Flask app on one loopback port serves the protected FHIR base
(``/fhir``, the ``iss`` of SMART App Launch 2.2.0 "EHR launch"), the OAuth
endpoints (``/auth/...``) and the launcher (``/launcher``). sekmet runs as a
child process on its own loopback port and is stopped by PID.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.config import Client, User, load_config
from sandbox.fhirstore import SekmetProcess, default_bundles_dir, free_port, load_bundles
from sandbox.oauth import SmartAuthServer, load_signing_key
from sandbox.proxy import FhirProxy
from sandbox.store import LaunchContext, MemoryStore

log = logging.getLogger(__name__)
DEFAULT_APP_LAUNCH_URL = "http://127.0.0.1:8000/launch"


class _QuietHandler(WSGIRequestHandler):
    """Access log without query strings (they carry codes, launch values, state)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, self.path.split("?")[0], code)


class Sandbox:
    """A strict EHR for development, demos and tests (see ``sandbox/README`` in the report)."""

    def __init__(self, data_dir: Path | str, host: str = "127.0.0.1", port: int = 0,
                 app_launch_url: str | None = None, token_lifetime: int = 300,
                 clients: list[dict[str, Any]] | None = None, config_path: Path | str | None = None,
                 bundles_dir: Path | str | None = None, sekmet_port: int = 0) -> None:
        if host != "127.0.0.1":
            raise ValueError("the sandbox listens on 127.0.0.1 only")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self._port = port
        self._sekmet_port = sekmet_port
        self.token_lifetime = int(token_lifetime)
        cfg = load_config(Path(config_path) if config_path else None)
        self.clients: dict[str, Client] = cfg.clients
        self.users: dict[str, User] = cfg.users
        self.launcher_defaults = cfg.launcher
        self.app_launch_url = app_launch_url or cfg.launcher.get("app_launch_url") or DEFAULT_APP_LAUNCH_URL
        self.bundles_dir = Path(bundles_dir) if bundles_dir else default_bundles_dir()
        for c in clients or []:
            self.register_client(c)
        self.store = MemoryStore()
        self.port = 0
        self._sekmet: SekmetProcess | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.auth: SmartAuthServer
        self.proxy: FhirProxy

    # URLs ----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def fhir_base(self) -> str:
        return self.base_url + "/fhir"

    @property
    def sekmet_base(self) -> str:
        if self._sekmet is None:
            raise RuntimeError("the sandbox is not started")
        return self._sekmet.base

    @property
    def launcher_url(self) -> str:
        return self.base_url + "/launcher"

    @property
    def token_endpoint(self) -> str:
        return self.base_url + "/auth/token"

    @property
    def style_url(self) -> str:
        return self.base_url + "/smart-style.json"

    # registrations ---------------------------------------------------------
    def register_client(self, data: dict[str, Any]) -> Client:
        """Add a client, or override fields of an existing registration with the same id."""
        client = Client.from_dict(data, base=self.clients.get(data["client_id"]))
        self.clients[client.client_id] = client
        return client

    def create_launch(self, user: str, patient: str | None, encounter: str | None = None,
                      browser: str | None = None) -> str:
        """A single-use ``launch`` value bound to the EHR context (user, patient, encounter) and,
        from the launcher, to the browser that opened it."""
        if user not in self.users:
            raise KeyError(f"unknown sandbox user {user!r}")
        u = self.users[user]
        ctx = LaunchContext(user=u.id, practitioner=u.practitioner, role=u.role, patient=patient,
                            encounter=encounter, need_patient_banner=True, smart_style_url=self.style_url)
        return self.store.add_launch(ctx, browser)

    def launch_redirect(self, user: str, patient: str | None, encounter: str | None = None,
                        browser: str | None = None) -> str:
        """The app launch URL with ``iss`` and a fresh ``launch``."""
        launch = self.create_launch(user, patient, encounter, browser)
        sep = "&" if "?" in self.app_launch_url else "?"
        return f"{self.app_launch_url}{sep}{urlencode({'iss': self.fhir_base, 'launch': launch})}"

    def launch_link(self, user: str = "prac-onc-1", patient: str = "pat-onc-01") -> str:
        """One-click launcher URL (``/launcher?user=..&patient=..&go=1``)."""
        return f"{self.launcher_url}?{urlencode({'user': user, 'patient': patient, 'go': '1'})}"

    # lifecycle -------------------------------------------------------------
    def start(self) -> Sandbox:
        """Start sekmet, load data (unless already loaded), then serve the Flask app."""
        from sandbox.web import create_web_app

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._port or free_port()
        self._sekmet = SekmetProcess(self.data_dir, self._sekmet_port)
        self._sekmet.start()
        try:
            load_bundles(self._sekmet.base, self.bundles_dir, self.data_dir / "sekmet")
            self.auth = SmartAuthServer(
                clients=self.clients, store=self.store, key=load_signing_key(self.data_dir),
                issuer=self.fhir_base, fhir_base=self.fhir_base, token_endpoint=self.token_endpoint,
                token_lifetime=self.token_lifetime)
            self.proxy = FhirProxy(self.auth, self._sekmet.base, self.fhir_base)
            self._server = make_server(self.host, self.port, create_web_app(self), threaded=True,
                                       request_handler=_QuietHandler)
            self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-server",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        log.info("sandbox ready: FHIR base %s, launcher %s", self.fhir_base, self.launcher_url)
        return self

    def stop(self) -> None:
        """Stop the HTTP server and the sekmet child process (by PID)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._sekmet is not None:
            self._sekmet.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
