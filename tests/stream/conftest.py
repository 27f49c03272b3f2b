"""Fixtures for the stream tests: a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)


@pytest.fixture
def mosquitto(tmp_path: Path):
    """Start Debian's mosquitto on 127.0.0.1:<free port>; yields the port (skips if absent)."""
    binary = _mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (scripts/services.sh installs it)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    yield from _run_broker(binary, conf, port)


def _run_broker(binary: str, conf: Path, port: int):
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                proc.kill()
                pytest.fail(f"mosquitto did not start on port {port}: {out}")
            time.sleep(0.05)
    yield port
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def secure_mosquitto(tmp_path_factory):
    """mosquitto with a password file (user ``alice``, password ``s3cret``) on one loopback port
    and TLS (a CA made here with openssl) plus the same password file on another.

    Yields ``{"port", "tls_port", "ca", "dir"}``; skips when mosquitto, mosquitto_passwd or
    openssl is absent. The files live in a world-readable folder because mosquitto, started as
    root, drops to its own user before reading them.
    """
    binary = _mosquitto()
    tools = {t: shutil.which(t) for t in ("mosquitto_passwd", "openssl")}
    if binary is None or None in tools.values():
        pytest.skip("mosquitto, mosquitto_passwd and openssl are needed (scripts/services.sh installs mosquitto)")
    folder = Path(tempfile.mkdtemp(prefix="edgesentry-mqtt-"))
    folder.chmod(0o755)
    try:
        subprocess.run([tools["mosquitto_passwd"], "-b", "-c", str(folder / "pw"), "alice", "s3cret"], check=True,
                       capture_output=True)
        _make_tls_files(tools["openssl"], folder)
        for p in folder.iterdir():
            p.chmod(0o644)
        port, tls_port = free_port(), free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings true\npersistence false\n"
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {folder / 'pw'}\n"
            f"listener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {folder / 'pw'}\n"
            f"cafile {folder / 'ca.crt'}\ncertfile {folder / 'srv.crt'}\nkeyfile {folder / 'srv.key'}\n")
        for ready in _run_broker(binary, conf, port):
            yield {"port": ready, "tls_port": tls_port, "ca": folder / "ca.crt", "dir": folder}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _make_tls_files(openssl: str, folder: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=edgesentry-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.crt",
        "-days", "2", "-extfile", "ext.cnf")
