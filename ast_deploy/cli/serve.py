"""ast-serve: serve a model on NVIDIA Triton Inference Server.

    ast-serve repo MODEL -o REPO [--name NAME] [--backend tensorrt|onnxruntime|python] ...
    ast-serve triton REPO [--http-port P] [--grpc-port P] [--metrics-port P] [--host H]
    ast-serve env [--rebuild]          make (or show) the cached server environment

Exit codes: 0 done; 1 the server failed (or exited by itself); 2 bad usage; 130 / 143 stopped by
SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..serving.config import ConfigError
from ..serving.env import ServerEnvError, ensure_server_env
from ..serving.repository import RepositoryError, write_repository
from ..serving.server import ServerError, TritonServer
from .common import add_version, tool_main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ast-serve", description="Serve AST on NVIDIA Triton Inference Server: write "
                                "a model repository, run the server, make its environment.")
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="{repo,triton,env}")

    r = sub.add_parser("repo", help="write a Triton model repository for an ONNX model or a TensorRT engine",
                       description="Write NAME (front model: one whole photo per request, the task's protocol and "
                       "tiling, inputs IMAGE UINT8 / IMAGE16 UINT16 [H,W,3] or INPUT FP32 [3,H,W], outputs OUTPUT_IMAGE / "
                       "OUTPUT_IMAGE16 / OUTPUT) "
                       "and NAME_core (the network, dynamic batching) into REPO.")
    r.add_argument("model", metavar="MODEL", help="an .onnx model (ast-export) or a TensorRT engine .plan (ast-build)")
    r.add_argument("-o", "--out", required=True, metavar="REPO", help="the model repository folder")
    r.add_argument("--name", help="the front model's name (default: the model file's stem); the core is NAME_core")
    r.add_argument("--backend", choices=("tensorrt", "onnxruntime", "python"),
                   help="core model: tensorrt (platform tensorrt_plan, for a .plan), onnxruntime (for an .onnx), or "
                        "python (our own ONNX Runtime / TensorRT backend in the Python backend, for servers "
                        "without those backends); default: by the file's type")
    r.add_argument("--max-batch", type=int, metavar="N",
                   help="the core's max_batch_size (default: the engine's profile; 8 for a dynamic-batch ONNX)")
    r.add_argument("--instances", type=int, default=1, metavar="N", help="core model instances (default 1)")
    r.add_argument("--front-instances", type=int, default=4, metavar="N",
                   help="front model instances, i.e. photos handled at once (default 4)")
    r.add_argument("--max-memory", metavar="SIZE", help="memory budget of each core instance (the network's working "
                   "set; the python core measures its cost and the front model plans with it): 512M, 4G or unlimited "
                   "(default automatic); photos whose own buffers exceed it are refused")
    r.add_argument("--task", help="task whose protocol the front model applies (default: the ONNX's ast.task)")
    r.add_argument("--protocol", help="protocol instead of the task's, e.g. pad:128, tiles:384:80")
    r.add_argument("--size-multiple", type=int, metavar="N", help="for an ONNX without ast.size_multiple metadata")
    r.add_argument("--kind", choices=("cpu", "gpu"), help="instance kind of the core (default gpu for tensorrt, "
                   "else cpu)")
    r.add_argument("--force", action="store_true", help="replace NAME and NAME_core if they exist")

    t = sub.add_parser("triton", help="run Triton Inference Server on a model repository",
                       description="Run the tritonserver on PATH (an NGC container), or the one bundled in "
                       "nvidia-pytriton from the server environment ast-serve makes and caches.")
    t.add_argument("repository", metavar="REPO", help="the model repository (ast-serve repo -o REPO)")
    t.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    t.add_argument("--http-port", type=int, default=8000, metavar="P", help="HTTP port (default 8000)")
    t.add_argument("--grpc-port", type=int, default=8001, metavar="P", help="gRPC port (default 8001)")
    t.add_argument("--metrics-port", type=int, default=8002, metavar="P", help="metrics port (default 8002)")
    t.add_argument("--server", default="auto", metavar="auto|bundled|PATH",
                   help="auto: tritonserver on PATH, else the bundled one (default); bundled; or a binary")
    t.add_argument("--env", metavar="DIR", help="server environment folder (default $AST_SERVER_ENV or "
                   "~/.cache/ast-deploy/server-env)")
    t.add_argument("--log", metavar="FILE", help="write the server's log here (default: a temporary file)")
    t.add_argument("--ready-timeout", type=float, default=180, metavar="S", help="seconds to wait for readiness")

    e = sub.add_parser("env", help="make (or show) the cached server environment")
    e.add_argument("--env", metavar="DIR", help="its folder (default $AST_SERVER_ENV or ~/.cache/ast-deploy/server-env)")
    e.add_argument("--rebuild", action="store_true", help="make it again from scratch")
    return p


def cmd_repo(args) -> int:

    try:
        front = write_repository(args.model, args.out, name=args.name, backend=args.backend, max_batch=args.max_batch,
                                 instances=args.instances, front_instances=args.front_instances,
                                 max_memory=args.max_memory, task=args.task, protocol=args.protocol,
                                 size_multiple=args.size_multiple, kind=args.kind, force=args.force)
    except (RepositoryError, ConfigError, ValueError, OSError) as e:
        print(f"ast-serve repo: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {front} and {front}_core; serve it with: ast-serve triton {args.out}")
    return 0


class _Stop(Exception):
    def __init__(self, signum):
        self.signum = signum


def cmd_triton(args) -> int:

    def on_signal(signum, _frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = TritonServer(args.repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, server=args.server, env_root=args.env, log_path=args.log)
    try:
        try:
            server.start(timeout=args.ready_timeout)
        except (ServerError, ServerEnvError) as e:
            print(f"ast-serve triton: error: {e}", file=sys.stderr)
            return 1 if server.repository.is_dir() else 2
        urls = server.urls
        print(f"Triton Inference Server {server.binary} is ready on {args.repository}:\n"
              f"  HTTP    {urls['http']}\n  gRPC    {urls['grpc']}\n  metrics {urls['metrics']}\n"
              f"  log     {server.log_path}\n"
              f"Restore through it with Runner(\"{urls['http']}/NAME\") or ast-restore --server {urls['grpc']}/NAME; "
              "Ctrl-C stops it.", flush=True)
        code = server.process.wait()
        print(f"ast-serve triton: the server exited by itself (code {code}); the end of its log:\n"
              f"{server.log_tail()}", file=sys.stderr)
        return 1
    except _Stop as stop:
        for s in previous:  # a second signal during shutdown must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        server.stop()
        name = "SIGINT" if stop.signum == signal.SIGINT else "SIGTERM"
        print(f"ast-serve triton: stopped by {name}", file=sys.stderr)
        return 130 if stop.signum == signal.SIGINT else 143
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def cmd_env(args) -> int:

    try:
        env = ensure_server_env(args.env, rebuild=args.rebuild)
    except ServerEnvError as e:
        print(f"ast-serve env: error: {e}", file=sys.stderr)
        return 1
    print(f"server environment: {env.root}\n  python       {env.python}\n  tritonserver {env.tritonserver}\n"
          f"  backends     {env.backends}")
    return 0


@tool_main("ast-serve")
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return {"repo": cmd_repo, "triton": cmd_triton, "env": cmd_env}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
