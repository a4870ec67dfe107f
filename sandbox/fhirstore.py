"""The FHIR store behind the sandbox: sekmet-fhir in a subprocess, plus data loading.

sekmet-fhir (0.1.1) is a FHIR R4 server (http://hl7.org/fhir/R4/http.html);
bundles are loaded as transactions (FHIR R4 http.html#transaction). Loading
is skipped when the data dir already holds the same bundles (content hash
in a marker file), so restarts are fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

log = logging.getLogger(__name__)

FIXTURE_BUNDLES = Path(__file__).with_name("fixtures")
MARKER = "loaded.sha256"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sekmet_command(config: Path) -> list[str]:
    """The ``sekmet serve`` command: the script next to the interpreter, else ``python -c``."""
    script = Path(sys.executable).with_name("sekmet")
    if script.exists():
        return [str(script), "serve", "--config", str(config)]
    found = shutil.which("sekmet")
    if found:
        return [found, "serve", "--config", str(config)]
    return [sys.executable, "-c", "from sekmet.cli import app; app()", "serve", "--config", str(config)]


class SekmetProcess:
    """A sekmet-fhir server on 127.0.0.1, owned by this process (stopped by PID)."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Write settings.yaml, start ``sekmet serve`` and wait for ``/metadata``."""
        store = self.data_dir / "sekmet"
        store.mkdir(parents=True, exist_ok=True)
        settings = {
            "base_url": self.base, "host": "127.0.0.1", "port": self.port,
            "data_dir": str(store), "simulator": {"enabled": False},
            "own_private_key_path": str(store / "keys" / "sekmet_private.pem"),
            "log_inbound": False,
        }
        cfg = self.data_dir / "settings.yaml"
        cfg.write_text(yaml.safe_dump(settings, sort_keys=False))
        logfile = open(self.data_dir / "sekmet.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, SEKMET_CONFIG=str(cfg))
        self.proc = subprocess.Popen(sekmet_command(cfg), cwd=str(self.data_dir), stdout=logfile,  # noqa: S603
                                     stderr=subprocess.STDOUT, env=env)
        logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited with {self.proc.returncode}; see {self.data_dir}/sekmet.log")
            try:
                if requests.get(self.base + "/metadata", timeout=2).ok:
                    log.info("sekmet-fhir ready at %s (pid %s)", self.base, self.proc.pid)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"sekmet did not answer within {timeout} s; see {self.data_dir}/sekmet.log")

    def stop(self) -> None:
        """Terminate, wait, then kill this one child process."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def default_bundles_dir() -> Path:
    """``synthetic_data/bundles`` when it holds bundles, else the sandbox's own fixtures."""
    real = Path(__file__).resolve().parent.parent / "synthetic_data" / "bundles"
    if real.is_dir() and any(real.glob("*.json")):
        return real
    return FIXTURE_BUNDLES


def bundles_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def load_bundles(base: str, bundles_dir: Path, data_dir: Path, timeout: float = 300.0) -> int:
    """POST every ``*.json`` bundle (sorted) to ``base``; returns how many were posted.

    Skipped (returns 0) when the marker in ``data_dir`` holds the same content hash.
    """
    files = sorted(Path(bundles_dir).glob("*.json"))
    digest = bundles_hash(files)
    marker = Path(data_dir) / MARKER
    if marker.exists() and marker.read_text().strip() == digest:
        log.info("FHIR data already loaded (%d bundles); skipping", len(files))
        return 0
    with requests.Session() as http:
        for f in files:
            resp = http.post(base, data=f.read_bytes(), timeout=timeout,
                             headers={"Content-Type": "application/fhir+json",
                                      "Accept": "application/fhir+json"})
            if resp.status_code >= 300:
                raise RuntimeError(f"loading {f.name} failed: HTTP {resp.status_code} {resp.text[:500]}")
    marker.write_text(digest)
    log.info("loaded %d bundles from %s", len(files), bundles_dir)
    return len(files)
