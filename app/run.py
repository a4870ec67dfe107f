"""``make run``: the sandbox and the app on 127.0.0.1; prints the launch link; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from app.devstack import start_stack
from app.logging import configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.run")
    parser.add_argument("--data-dir", default="var/run")
    parser.add_argument("--app-port", type=int, default=8000)
    parser.add_argument("--sandbox-port", type=int, default=9000)
    args = parser.parse_args(argv)
    configure("INFO")
    stack = start_stack(Path(args.data_dir), app_port=args.app_port, sandbox_port=args.sandbox_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"App:          {stack.app_url}", flush=True)  # noqa: T201 - CLI output
    print(f"EHR launcher: {stack.sandbox.launcher_url}", flush=True)  # noqa: T201
    print(f"FHIR base:    {stack.sandbox.fhir_base}", flush=True)  # noqa: T201
    print(f"Launch link:  {stack.launch_link()}", flush=True)  # noqa: T201
    print("Headless (SMART Backend Services):\n"  # noqa: T201
          f"  APP_PRIVATE_KEY_PATH={stack.backend_key_path} APP_BACKEND_CLIENT_ID=draft-agent-backend "
          f"APP_SECRET_KEY=$(cat {Path(args.data_dir).resolve() / 'dev_secret_key'}) "
          f".venv/bin/python -m app draft --fhir-base {stack.sandbox.fhir_base} --patient pat-onc-01 "
          "--task irae --json", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
