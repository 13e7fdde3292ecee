"""The server environment: a virtual environment of its own, made and cached by ``ast-serve``, in which
the Triton Inference Server bundled with ``nvidia-pytriton`` and its Python backend run.

It holds the ``nvidia-pytriton`` wheel (tritonserver 2.51 with the Python backend only), NumPy < 2
(that build's Python backend returns empty outputs under NumPy 2), ONNX Runtime, Pillow and tqdm, and
a copy of this project installed without its dependencies (no torch: serving an ONNX or an engine
needs none). The user's environment is never touched.

Layout under the cache folder (``$AST_SERVER_ENV``, else ``~/.cache/ast-deploy/server-env``)::

    bin/python ...                     the virtual environment
    tritonserver/backends/python/      the Python backend, with the stub for this Python version
    ast-server-env.json                written last: what was installed (a folder without it is rebuilt)

The project copy is refreshed whenever the running project's sources differ from it (a hash of them
is kept in ``ast-server-env.json``), so the server always runs the code the client runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PYTRITON = "nvidia-pytriton==0.7.0"  # tritonserver 2.51.0, Python backend only
REQUIREMENTS = [PYTRITON, "numpy>=1.26,<2", "onnxruntime>=1.20,<1.34", "pillow>=10,<14", "tqdm>=4.66,<5"]
STAMP = "ast-server-env.json"
LAYOUT_VERSION = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the running ast_deploy package


class ServerEnvError(RuntimeError):
    """The server environment cannot be made (offline, no venv module, a failed install)."""


def default_root() -> Path:
    if os.environ.get("AST_SERVER_ENV"):
        return Path(os.environ["AST_SERVER_ENV"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ast-deploy" / "server-env"


@dataclass(frozen=True)
class ServerEnv:
    root: Path
    python: Path           # the environment's interpreter
    site_packages: Path
    python_libdir: Path    # LIBDIR of the base interpreter: its libpython must be the one the stub loads
    tritonserver: Path     # the bundled server binary
    backends: Path         # --backend-directory (python backend + this Python's stub)
    libs: Path             # nvidia_pytriton.libs: the server's own shared libraries

    def environ(self, base: dict | None = None) -> dict:
        """Environment variables to run the bundled server with: this env's libpython first on the
        library path (else the stub loads another Python's and fails with "'_thread.RLock' object has
        no attribute '_recursion_count'"), then the server's libraries; its bin/ first on PATH (the
        stub's interpreter finds its prefix, hence site-packages, from the ``python`` there)."""
        env = dict(os.environ if base is None else base)
        paths = [str(self.python_libdir), str(self.libs)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        env["LD_LIBRARY_PATH"] = ":".join(paths)
        env["PATH"] = f"{self.python.parent}:{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)  # the stub must import the env's copy of the project, not the caller's tree
        env.pop("PYTHONHOME", None)
        return env


def source_hash(package_dir: Path = PACKAGE_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _query(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def _describe(root: Path) -> ServerEnv:
    python = root / "bin" / "python"
    site = Path(_query(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    libdir = Path(_query(python, "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"))
    return ServerEnv(root=root, python=python, site_packages=site, python_libdir=libdir,
                     tritonserver=site / "pytriton" / "tritonserver" / "bin" / "tritonserver",
                     backends=root / "tritonserver" / "backends", libs=site / "nvidia_pytriton.libs")


@contextlib.contextmanager
def _locked(root: Path):
    import fcntl

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list, log_path: Path, what: str) -> None:
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(map(str, cmd))}\n")
        log.flush()
        result = subprocess.run([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise ServerEnvError(f"{what} failed (exit {result.returncode}); the end of {log_path}:\n{tail}")


def _prepare_backends(env: ServerEnv) -> None:
    """The bundled backends folder with the stub built for this environment's Python version (as
    pytriton does in its workspace), once, inside the environment."""
    dist = env.site_packages / "pytriton" / "tritonserver"
    version = _query(env.python, "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerEnvError(f"{PYTRITON} has no Python-backend stub for Python {version} (looked for {stub})")
    if env.backends.exists():
        shutil.rmtree(env.backends)
    shutil.copytree(dist / "backends", env.backends)
    shutil.copy2(stub, env.backends / "python" / "triton_python_backend_stub")


def sync_project(env: ServerEnv, package_dir: Path = PACKAGE_DIR) -> bool:
    """Install (copy) the running project into the environment, without dependencies, when its sources
    differ from the installed copy. Returns whether it copied."""
    stamp = json.loads((env.root / STAMP).read_text()) if (env.root / STAMP).is_file() else {}
    wanted = source_hash(package_dir)
    target = env.site_packages / "ast_deploy"
    if stamp.get("project_hash") == wanted and target.is_dir():
        return False
    staging = env.site_packages / f".ast_deploy-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(package_dir, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    stamp["project_hash"] = wanted
    if stamp.get("complete"):
        (env.root / STAMP).write_text(json.dumps(stamp, indent=2))
    return True


def ensure_server_env(root: str | os.PathLike | None = None, *, rebuild: bool = False, log=None) -> ServerEnv:
    """The cached server environment, made on first use (a few minutes: it downloads ~150 MB)."""
    root = Path(root).expanduser() if root else default_root()
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    with _locked(root):
        stamp_path = root / STAMP
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
        fresh = (not rebuild and stamp.get("complete") and stamp.get("requirements") == REQUIREMENTS
                 and stamp.get("layout") == LAYOUT_VERSION and stamp.get("python") == sys.version.split()[0]
                 and stamp.get("base_prefix") == sys.base_prefix and (root / "bin" / "python").exists())
        if fresh:
            env = _describe(root)
            if sync_project(env):
                say(f"ast-serve: updated the project copy in the server environment {root}")
            return env
        if root.exists():
            shutil.rmtree(root)
        say(f"ast-serve: making the server environment in {root} (first time only; downloads ~150 MB)")
        start = time.monotonic()
        root.mkdir(parents=True)
        log_path = root / "build.log"
        try:
            _run([sys.executable, "-m", "venv", root], log_path, "python -m venv")
            _run([root / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                  *REQUIREMENTS], log_path, "installing the server packages (" + ", ".join(REQUIREMENTS) + ")")
            env = _describe(root)
            _prepare_backends(env)
            sync_project(env)
        except (ServerEnvError, OSError, subprocess.CalledProcessError) as e:
            # keep build.log for the message, drop the half-made environment itself
            for child in root.iterdir():
                if child.name != "build.log":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            raise e if isinstance(e, ServerEnvError) else ServerEnvError(f"making {root} failed: {e}") from e
        seconds = time.monotonic() - start
        stamp = {"complete": True, "layout": LAYOUT_VERSION, "requirements": REQUIREMENTS,
                 "python": sys.version.split()[0], "base_prefix": sys.base_prefix, "project_hash": source_hash(),
                 "build_seconds": round(seconds, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        stamp_path.write_text(json.dumps(stamp, indent=2))
        say(f"ast-serve: server environment ready in {seconds:.0f} s")
        return env
