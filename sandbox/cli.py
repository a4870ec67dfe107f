"""``python -m app sandbox`` / ``python -m sandbox``: run the EHR sandbox in the foreground.

Logs the FHIR base (the SMART ``iss``) and the one-click launcher link; stops
sekmet on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from sandbox.server import DEFAULT_APP_LAUNCH_URL, Sandbox

log = logging.getLogger("sandbox.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandbox", description="Embedded EHR sandbox (sekmet-fhir + SMART)")
    p.add_argument("--port", type=int, default=9000, help="HTTP port on 127.0.0.1 (0: any free port)")
    p.add_argument("--data-dir", type=Path, default=Path("var/sandbox"))
    p.add_argument("--app-launch-url", default=DEFAULT_APP_LAUNCH_URL)
    p.add_argument("--token-lifetime", type=int, default=300, help="access token lifetime in seconds")
    p.add_argument("--config", type=Path, default=None, help="clients/users YAML (default: built in)")
    p.add_argument("--bundles-dir", type=Path, default=None, help="FHIR bundles to load")
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the sandbox and block until SIGINT/SIGTERM; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    sb = Sandbox(data_dir=args.data_dir, port=args.port, app_launch_url=args.app_launch_url,
                 token_lifetime=args.token_lifetime, config_path=args.config, bundles_dir=args.bundles_dir)
    try:
        sb.start()
        log.info("FHIR base (iss): %s", sb.fhir_base)
        log.info("EHR launcher:    %s", sb.launcher_url)
        log.info("one-click launch: %s", sb.launch_link())
        while not stop.wait(0.5):
            pass
    finally:
        sb.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
