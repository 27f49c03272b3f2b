"""Start the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel on loopback.

For CI and laptops without a Triton container: that binary has only the python backend,
which is enough for the repository variant whose graph model runs ONNX Runtime inside a
python model (``write_model_repository(..., variant="python")``). The traps, each handled here:

- the python-backend stub links ``libpython3.X.so``; the one of *this* interpreter must win
  over a system copy, so its ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``;
- the stub's bundled ``libcudart`` lives in ``nvidia_pytriton.libs`` (found via RPATH only
  from the wheel's own folders), so that folder joins ``LD_LIBRARY_PATH`` too;
- the stub must sit in ``<backend-dir>/python/`` beside ``libtriton_python.so``: a private
  backend directory is assembled (symlinks + a copy of the stub) instead of editing the wheel;
- the stub embeds the first ``python3`` on ``PATH`` (its ``sys.prefix`` decides which
  site-packages the models see), so an environment's ``bin`` goes first on ``PATH``;
- the wheel pins ``numpy<2`` and its stub really needs it: with numpy 2 the python models'
  output tensors arrive empty ("cannot reshape array of size 0"), and ``PYTHONPATH`` is not
  honoured by the stub. So the models run in a small side environment
  (``VENV/pytriton-env``, made by ``scripts/services.sh``): a venv without pip holding only
  numpy 1.x, whose ``.pth`` adds the main environment's site-packages *after* its own, so the
  models import numpy 1.x and everything else (edgesentry, onnxruntime) from the main one;
- install the wheel itself with ``pip install --no-deps nvidia-pytriton`` (numpy stays 2.x);
- start the server *before* importing ``tritonclient.http`` (gevent must not be forked).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

from edgesentry.errors import BackendUnavailableError


def pytriton_root() -> Path:
    """Folder of the wheel's Triton distribution (``.../pytriton/tritonserver``)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise BackendUnavailableError(f"{root}/bin/tritonserver is missing from the nvidia-pytriton wheel")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_dir(root: Path, dest: Path) -> Path:
    """A backend directory with the python backend and this interpreter's stub."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendUnavailableError(f"nvidia-pytriton ships no python-backend stub for Python {ver}")
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = py / name
        if not link.exists():
            link.symlink_to(root / "backends" / "python" / name)
    if not (py / stub.name).exists():
        shutil.copy2(stub, py / stub.name)
    return dest


def default_env_dir() -> Path:
    return Path(sys.prefix) / "pytriton-env"


def server_env(root: Path, env_dir: Path | None = None) -> dict[str, str]:
    """Environment of the server process (see the module docstring for each variable)."""
    env = dict(os.environ)
    env_dir = default_env_dir() if env_dir is None else env_dir
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (env_dir / "bin" / "python3").exists() or not (env_dir / "lib" / ver / "site-packages" / "numpy").is_dir():
        raise BackendUnavailableError(
            f"the pytriton python-backend stub needs an environment with numpy<2 at {env_dir} "
            "(scripts/services.sh creates it: python -m venv --without-pip, numpy<2, a .pth to the main venv)"
        )
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(root.parent.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(
        os.pathsep
    )
    env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


class LocalTritonServer:
    """``with LocalTritonServer(repo) as s: s.http_url, s.grpc_url``; stops the server on exit."""

    def __init__(
        self,
        repository: str | os.PathLike,
        *,
        startup_timeout: float = 60.0,
        log_file: str | None = None,
        env_dir: str | os.PathLike | None = None,
    ):
        self.repository = Path(repository)
        self.env_dir = Path(env_dir) if env_dir is not None else None
        self.startup_timeout = startup_timeout
        self.http_port, self.grpc_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesentry-triton-")
        self.log_path = Path(log_file) if log_file else Path(self._tmp.name) / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> LocalTritonServer:
        root = pytriton_root()
        env = server_env(root, self.env_dir)
        backends = backend_dir(root, Path(self._tmp.name) / "backends")
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={root / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendUnavailableError(f"tritonserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise BackendUnavailableError(f"tritonserver not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
