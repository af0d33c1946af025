"""Start `recsys ui ...` on a free local port, read one URL from it, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def body_served_by_ui(ui_arguments: list[str], path: str, wait_s: float = 90) -> str:
    """Run ``recsys ui *ui_arguments --port P``, return the body at ``path`` once it answers, stop the
    server, and check that nothing answers on the port any more (stopping `recsys ui` stops it all)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "ui", *ui_arguments, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    body = ""
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as response:
                    body = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    time.sleep(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    return body
