"""Run a real Triton Inference Server on a model repository (``ast-serve triton``).

The server is the ``tritonserver`` on PATH (an NGC container, whose Python backend uses the
container's Python: install this project there with ``pip install --no-deps``), or the one bundled in
``nvidia-pytriton``, run from the server environment ``ast-serve`` makes (``serving.env``). The
bundled server's quirks are handled here:

- the Python-backend stub must load the server environment's own libpython (``ServerEnv.environ``);
- the Python backend's shared-memory regions get a prefix unique to this run
  (``--backend-config=python,shm-region-prefix-name=...``) and an exit timeout long enough for the
  stubs to remove them; anything left with that prefix is removed after the server exits;
- the server is started in its own session, dies with its parent (``PR_SET_PDEATHSIG``), listens on
  127.0.0.1 unless told otherwise, and is stopped with SIGTERM (then SIGKILL after the exit timeout).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from .env import ensure_server_env

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "ast_serve_"
EXIT_TIMEOUT_S = 30


class ServerError(RuntimeError):
    """The server did not start, or stopped early (the message carries the end of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class TritonServer:
    """``with TritonServer(repo, http_port=..., grpc_port=...) as server: ...`` starts the server, waits
    until it is ready, and always stops it and removes its shared memory."""

    def __init__(self, repository, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, server: str = "auto", env_root=None, log_path=None,
                 exit_timeout: int = EXIT_TIMEOUT_S, extra_args=(), say=None):
        self.repository = Path(repository).resolve()
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.server, self.env_root, self.exit_timeout = server, env_root, exit_timeout
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.process: subprocess.Popen | None = None
        self._log = None

    # ------------------------------------------------------------------ what to run
    def _binary_and_env(self):
        """(tritonserver, extra arguments, environment) for the chosen server."""
        on_path = shutil.which("tritonserver")
        if self.server not in ("auto", "bundled"):
            binary = Path(self.server)
            if not binary.is_file():
                raise ServerError(f"--server {self.server}: no such file")
            return binary, [], dict(os.environ)
        if self.server == "auto" and on_path:
            return Path(on_path), [], dict(os.environ)

        env = ensure_server_env(self.env_root, log=self.say)
        return env.tritonserver, [f"--backend-directory={env.backends}"], env.environ()

    @property
    def connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)

    @property
    def urls(self) -> dict:
        h = self.connect_host
        return {"http": f"http://{h}:{self.http_port}", "grpc": f"grpc://{h}:{self.grpc_port}",
                "metrics": f"http://{h}:{self.metrics_port}/metrics"}

    def command(self, binary, extra) -> list[str]:
        return [str(binary), f"--model-repository={self.repository}", *extra,
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", "--strict-readiness=true", "--disable-auto-complete-config",
                f"--exit-timeout-secs={self.exit_timeout}",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                "--log-verbose=0", *self.extra_args]

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 180.0) -> "TritonServer":
        if not self.repository.is_dir():
            raise ServerError(f"{self.repository}: no such model repository")
        binary, extra, env = self._binary_and_env()
        self.binary = binary
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")
        else:
            import tempfile

            self._log = tempfile.NamedTemporaryFile(prefix="tritonserver-", suffix=".log", delete=False)
            self.log_path = Path(self._log.name)
        self.process = subprocess.Popen(self.command(binary, extra), env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
        return "".join(text.splitlines(keepends=True)[-lines:])

    def log_errors(self, limit: int = 10) -> str:
        """The server's error lines (``E<date> ...``) that say something: a model that failed to load."""
        import re

        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return ""
        errors = [line for line in lines if re.match(r"E\d{4} ", line) and "CudaDriverHelper" not in line]
        return "\n".join(errors[-limit:])

    def _failure(self, what: str) -> str:
        errors = self.log_errors()
        detail = f"its errors:\n{errors}" if errors else f"the end of its log:\n{self.log_tail()}"
        if "unable to find backend library" in errors:
            detail += ("\n(this server lacks that backend; the one bundled in nvidia-pytriton has the Python backend "
                       "only: write the repository with ast-serve repo --backend python, or use an NGC container)")
        return f"{what}; full log: {self.log_path}; {detail}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.connect_host}:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(self._failure(f"tritonserver exited with code {self.process.returncode} "
                                                "before it was ready"))
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise ServerError(self._failure(f"tritonserver was not ready within {timeout:.0f} s"))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait for the models to unload, SIGKILL if it hangs; remove our shared memory."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(self.exit_timeout + 15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            else:  # it exited by itself: its stubs may still be going
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            code = self.process.returncode
        self._wait_for_group()
        self.remove_shared_memory()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def _wait_for_group(self, seconds: float = 10.0) -> None:
        """The stubs are in the server's session: wait for them to go, then kill what is left."""
        if self.process is None:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def shared_memory_files(self) -> list[Path]:
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*")) if SHM_DIR.is_dir() else []

    def remove_shared_memory(self) -> None:
        for path in self.shared_memory_files():
            path.unlink(missing_ok=True)

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc):
        self.stop()
