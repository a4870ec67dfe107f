"""Load the bundles into a throw-away sekmet FHIR server and check reads (manual verification).

    python synthetic_data/load_sekmet.py [--port 18931] [--keep]

Starts ``sekmet serve`` in a temp dir (simulator off), POSTs every bundle as a transaction,
then reads back DocumentReferences and Binaries. Stops the server by its own PID.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEKMET = Path(sys.executable).with_name("sekmet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method: str, url: str, body: bytes | None = None,
         accept: str = "application/fhir+json") -> tuple[int, dict | bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={  # noqa: S310
        "Accept": accept, "Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="leave the server running")
    args = ap.parse_args(argv)
    port = args.port or free_port()
    tmp = Path(tempfile.mkdtemp(prefix="sekmet-synth-"))
    (tmp / "settings.yaml").write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\nhost: 127.0.0.1\nport: {port}\n"
        f"data_dir: {tmp}\nsimulator:\n  enabled: false\n")
    log = open(tmp / "sekmet.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(SEKMET), "serve", "--config", "settings.yaml"],  # noqa: S603
                            cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/fhir"
    failures = 0
    try:
        t0 = time.monotonic()
        while True:
            try:
                if call("GET", f"{base}/metadata")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > 60 or proc.poll() is not None:
                print("sekmet did not start; see", tmp / "sekmet.log")
                return 2
            time.sleep(0.3)
        print(f"sekmet up on {base} in {time.monotonic() - t0:.1f}s (pid {proc.pid}, dir {tmp})")
        t_all = time.monotonic()
        for path in sorted((HERE / "bundles").glob("*.json")):
            t1 = time.monotonic()
            status, out = call("POST", base, path.read_bytes())
            ok = status == 200
            failures += not ok
            print(f"  {path.name}: {status} in {time.monotonic() - t1:.2f}s")
            if not ok:
                print(json.dumps(out, indent=1)[:3000])
        print(f"loaded all bundles in {time.monotonic() - t_all:.1f}s")
        status, b = call("GET", f"{base}/DocumentReference?patient=pat-onc-01&_count=50")
        ids = sorted(e["resource"]["id"] for e in b.get("entry", []))
        print(f"DocumentReference?patient=pat-onc-01: {status}, total={b.get('total')}, "
              f"page={len(ids)}, first={ids[:3]}")
        manifest = json.loads((HERE / "manifest.json").read_text())
        bundle = json.loads((HERE / "bundles" / "pat-onc-01.json").read_text())
        bins = [e["resource"]["id"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Binary"]
        if bins:
            status, r = call("GET", f"{base}/Binary/{bins[0]}")
            print(f"Binary/{bins[0]} (fhir+json): {status} "
                  f"{r.get('contentType') if isinstance(r, dict) else type(r)}")
        for pid in ("pat-canary", "pat-gen-03"):
            status, r = call("GET", f"{base}/Patient/{pid}")
            print(f"Patient/{pid}: {status} id={r.get('id') if isinstance(r, dict) else '?'}")
        hid = manifest["hostile"]["long_note"]
        status, r = call("GET", f"{base}/DocumentReference/{hid}")
        print(f"DocumentReference/{hid} (long note): {status}")
        status, r = call("GET", f"{base}/DocumentReference?_security=PSY")
        print(f"DocumentReference?_security=PSY: {status} total={r.get('total')}")
    finally:
        if not args.keep:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
