"""Serving on a real Triton Inference Server (the one bundled in nvidia-pytriton, run from the server
environment ``ast-serve`` makes and caches): repositories, the server, HTTP and gRPC clients.

The server environment is made through ``ast-serve``'s own code (first time: about a minute and a
half, then cached in $AST_SERVER_ENV or ~/.cache/ast-deploy/server-env); where it cannot be made
(offline, say) the server tests are skipped with the reason. The configuration tests need only
tritonclient (Triton's model-config protobuf).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tritonclient.grpc", reason="the [serving] extra (tritonclient) is not installed")

from ast_deploy.runner import Runner  # noqa: E402
from ast_deploy.serving.config import ConfigError, parse_config, validate_config  # noqa: E402
from ast_deploy.serving.repository import RepositoryError, write_repository  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "square-pad:128"  # the derain task's, which the demo ONNX's ast.task gives the front model
# The shared server's budget: the odd photos (square-pad to 256x256, ~140 MiB on the demo model) run
# whole, a 300x420 photo (512x512: ~540 MiB) must be tiled.
SERVED_BUDGET = "192M"
ODD_SIZES = [(97, 131), (150, 70), (61, 203)]


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def free_port() -> int:
    from ast_deploy.serving.server import free_port as pick

    return pick()


# ---------------------------------------------------------------- the demo ONNX, once per module

@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory) -> Path:
    """The demo model (trained weights) as a dynamic-size ONNX, with the metadata ast-export writes.
    TorchScript exporter: ~10 s here against ~1 min for dynamo (the exporter is tested elsewhere)."""
    import onnx
    import torch

    from ast_deploy.demo import build_demo_model

    path = tmp_path_factory.mktemp("demo-onnx") / "demo.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build_demo_model(), (torch.rand(1, 3, 128, 128),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})
    model = onnx.load(str(path))
    for key, value in {"ast.size_multiple": "64", "ast.task": "derain"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def local(demo_onnx):
    return Runner(str(demo_onnx), protocol=PROTOCOL)


def photos(seed: int = 0):
    """Photo-like uint8 images of odd sizes: smooth colour fields with texture and 'rain' streaks."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in ODD_SIZES:
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
        streaks = (rng.random((h, w)) > 0.97)[..., None] * 0.4
        out.append((np.clip(base + streaks + 0.03 * rng.standard_normal((h, w, 3)), 0, 1) * 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------- config.pbtxt against Triton's protobuf

def fake_engine(tmp_path: Path, onnx_path: Path) -> Path:
    """An engine file with the sidecar ast-build writes beside it. The repository writer reads only
    the sidecar (TensorRT is not installed here), so the engine's bytes are not looked at."""
    plan = tmp_path / "demo.plan"
    plan.write_bytes(b"not read by the repository writer")
    sidecar = {"engine": plan.name, "input": "input", "size_multiple": 64,
               "profile": {"min": [1, 3, 64, 64], "opt": [4, 3, 256, 256], "max": [16, 3, 1024, 1024]},
               "onnx": {"path": str(onnx_path), "metadata": {"ast.task": "derain", "ast.size_multiple": "64"}}}
    (tmp_path / "demo.plan.json").write_text(json.dumps(sidecar))
    return plan


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime", "python"], ids=["tensorrt_plan", "onnxruntime", "python"])
def test_repository_config_parses_with_triton_protobuf(backend, demo_onnx, tmp_path):
    model = fake_engine(tmp_path, demo_onnx) if backend == "tensorrt" else demo_onnx
    front_dir = write_repository(model, tmp_path / "repo", name="derain", backend=backend, instances=2)
    core = parse_config((tmp_path / "repo" / "derain_core" / "config.pbtxt").read_text())
    front = parse_config((front_dir / "config.pbtxt").read_text())
    from tritonclient.grpc import model_config_pb2 as pb

    assert core.name == "derain_core"
    if backend == "tensorrt":
        assert core.platform == "tensorrt_plan" and core.max_batch_size == 16  # the profile's max batch
        assert (tmp_path / "repo" / "derain_core" / "1" / "model.plan").read_bytes() == model.read_bytes()
        assert core.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    else:
        assert core.backend == backend and core.max_batch_size == 8
        assert core.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
        assert (tmp_path / "repo" / "derain_core" / "1" / "model.onnx").read_bytes() == demo_onnx.read_bytes()
    assert (tmp_path / "repo" / "derain_core" / "1" / "model.py").exists() == (backend == "python")
    assert core.instance_group[0].count == 2
    outputs = ["output", "COST"] if backend == "python" else ["output"]  # COST: the python core's cost query
    assert [t.name for t in core.input] == ["input"] and [t.name for t in core.output] == outputs
    for tensor in list(core.input) + list(core.output)[:1]:
        assert list(tensor.dims) == [3, -1, -1] and tensor.data_type == pb.TYPE_FP32
    if backend == "python":
        assert list(core.output[1].dims) == [4] and core.output[1].data_type == pb.TYPE_FP64
        assert core.parameters["max_memory"].string_value == "auto"
    assert core.HasField("dynamic_batching")

    assert front.backend == "python" and front.max_batch_size == 0
    inputs = {t.name: t for t in front.input}
    assert inputs["IMAGE"].data_type == pb.TYPE_UINT8 and list(inputs["IMAGE"].dims) == [-1, -1, 3]
    assert inputs["IMAGE16"].data_type == pb.TYPE_UINT16 and list(inputs["IMAGE16"].dims) == [-1, -1, 3]
    assert inputs["INPUT"].data_type == pb.TYPE_FP32 and list(inputs["INPUT"].dims) == [3, -1, -1]
    assert all(t.optional for t in front.input)
    assert {t.name for t in front.output} == {"OUTPUT_IMAGE", "OUTPUT_IMAGE16", "OUTPUT"}
    params = {k: v.string_value for k, v in front.parameters.items()}
    assert params["core_model"] == "derain_core" and params["protocol"] == PROTOCOL
    assert params["size_multiple"] == "64"
    assert (front_dir / "1" / "model.py").read_text().count("ast_deploy.serving.front") == 1


def test_validation_rejects_what_triton_would(tmp_path):
    with pytest.raises(ConfigError, match="schema"):
        parse_config('name: "x"\nbackend: "python"\nmax_batch_size: 0\nimput [ ]\n')  # misspelt field
    with pytest.raises(ConfigError, match="schema"):
        parse_config('name: "x"\ninput [ { name: "a" data_type: TYPE_FLOAT99 dims: [ 3 ] } ]\n')
    with pytest.raises(ConfigError, match="dynamic batching"):
        validate_config('name: "x"\nbackend: "python"\nmax_batch_size: 0\ndynamic_batching { }\n'
                        'input [ { name: "a" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')


def test_repository_refuses_bad_requests_and_never_half_writes(demo_onnx, tmp_path):
    from ast_deploy.cli import serve

    out = tmp_path / "repo"
    assert serve.main(["repo", str(demo_onnx), "-o", str(out), "--name", "derain", "--backend", "python"]) == 0
    before = (out / "derain" / "config.pbtxt").read_text()
    assert serve.main(["repo", str(demo_onnx), "-o", str(out), "--name", "derain", "--protocol", "pad:128"]) == 2
    assert (out / "derain" / "config.pbtxt").read_text() == before  # not replaced without --force
    ckpt = REPO_ROOT / "ast_deploy" / "demo" / "weights" / "derain_demo.pth"
    with pytest.raises(RepositoryError, match="ast-export"):
        write_repository(ckpt, tmp_path / "r2")
    with pytest.raises(RepositoryError, match="TensorRT engine"):
        write_repository(demo_onnx, tmp_path / "r3", backend="tensorrt")
    with pytest.raises(ValueError, match="multiple of 64"):
        write_repository(demo_onnx, tmp_path / "r4", protocol="pad:100")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("r2", "r3", "r4"))
    assert serve.main(["repo", str(demo_onnx), "-o", str(out), "--name", "derain", "--protocol", "pad:128",
                       "--force"]) == 0
    assert "pad:128" in (out / "derain" / "config.pbtxt").read_text()


def test_server_urls_are_recognised_and_checked():
    from ast_deploy.backends.triton_client import is_server_url, parse_server_url

    assert parse_server_url("http://127.0.0.1:8000/derain") == ("http", "127.0.0.1:8000", "derain", "")
    assert parse_server_url("grpc://server/derain/2") == ("grpc", "server:8001", "derain", "2")
    assert parse_server_url("https://[::1]/m") == ("http", "[::1]:443", "m", "")
    assert is_server_url("grpc://h:1/m") and not is_server_url("models/derain.onnx") and not is_server_url(None)
    for bad in ("http://127.0.0.1:8000", "http://127.0.0.1:8000/a/b/c", "grpc:///derain"):
        with pytest.raises(ValueError, match="expected"):
            parse_server_url(bad)
    from ast_deploy.backends import BackendError

    with pytest.raises(BackendError, match="cannot reach"):  # nothing listens there
        Runner(f"http://127.0.0.1:{free_port()}/derain")


# ---------------------------------------------------------------- a real server

@pytest.fixture(scope="module")
def server_env():
    from ast_deploy.serving.env import ServerEnvError, ensure_server_env

    start = time.monotonic()
    try:
        env = ensure_server_env()
    except ServerEnvError as e:
        pytest.skip(f"the server environment cannot be made here: {str(e).splitlines()[0]}")
    print(f"server environment ready in {time.monotonic() - start:.1f} s: {env.root}")
    return env


def start_cli_server(repo: Path, log: Path):
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    process = subprocess.Popen([sys.executable, "-m", "ast_deploy.cli.serve", "triton", str(repo),
                                "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
                                "--metrics-port", str(ports["metrics"]), "--log", str(log)],
                               env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"ast-serve triton exited with {process.returncode}:\n{out}\n{err}\n"
                        f"{log.read_text() if log.exists() else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return process, ports
        except OSError:
            time.sleep(0.3)
    process.kill()
    pytest.fail("the server was not ready within 240 s")


def server_processes(repo: Path) -> list[int]:
    """Processes whose command line names this repository (tritonserver; its stubs are its children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "tritonserver" in cmdline and str(repo) in cmdline:
                found.append(int(proc.name))
    return found


def our_shm_files(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"ast_serve_{pid}_*"))


def stop_cli_server(process, sig=signal.SIGTERM, timeout: float = 90) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return process.returncode, err


@pytest.fixture(scope="module")
def served(server_env, demo_onnx, tmp_path_factory):
    """The demo ONNX behind a real server (python core backend), started by ``ast-serve triton``,
    always stopped at the end."""
    root = tmp_path_factory.mktemp("served")
    repo = root / "repo"
    write_repository(demo_onnx, repo, name="derain", backend="python", front_instances=4, max_memory=SERVED_BUDGET)
    log = root / "tritonserver.log"
    process, ports = start_cli_server(repo, log)
    try:
        yield {"http": f"http://127.0.0.1:{ports['http']}", "grpc": f"grpc://127.0.0.1:{ports['grpc']}",
               "ports": ports, "process": process, "repo": repo}
    finally:
        import gc

        gc.collect()  # Runners the CLIs opened in-process: their connections close with them
        started = time.monotonic()
        code, err = stop_cli_server(process)
        print(f"server stopped in {time.monotonic() - started:.1f} s")
        assert code == 143, err
        assert "Exit timeout expired" not in log.read_text()  # models unloaded, stubs ended gracefully
        assert not server_processes(repo)
        assert not our_shm_files(process.pid)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_served_photos_equal_the_local_runner(served, local, kind):
    runner = Runner(f"{served[kind]}/derain")
    assert str(runner.protocol) == PROTOCOL
    for photo in photos():
        got, want = runner(photo), local(photo)
        assert got.shape == photo.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # equal within 1/255
    x = photos(1)[0].transpose(2, 0, 1).astype(np.float32) / 255  # float in, float out, not clipped
    np.testing.assert_allclose(runner(x), local(x), atol=1e-5)
    if kind == "grpc":  # 16-bit photos go whole as IMAGE16 and come back at 16 bits
        deep = (photos(1)[1].astype(np.uint16) * 257) ^ np.uint16(0x00A5)
        got = runner(deep)
        assert got.dtype == np.uint16 and np.abs(got.astype(int) - local(deep).astype(int)).max() <= 257
        assert np.any(got % 257)  # not 8-bit values scaled up
    runner.backend.close()


def test_image_input_gives_image_output(served, local):
    import tritonclient.http as http

    client = http.InferenceServerClient(f"127.0.0.1:{served['ports']['http']}")
    for photo in photos(2):
        tensor = http.InferInput("IMAGE", list(photo.shape), "UINT8")
        tensor.set_data_from_numpy(photo)
        result = client.infer("derain", [tensor], outputs=[http.InferRequestedOutput("OUTPUT_IMAGE")])
        got = result.as_numpy("OUTPUT_IMAGE")
        assert got.dtype == np.uint8 and got.shape == photo.shape
        assert np.abs(got.astype(int) - local(photo).astype(int)).max() <= 1
    client.close()


def test_served_tiles_follow_the_plan_sent(served, demo_onnx):
    """A tiling protocol runs on the server (tiles batched through BLS to the core), as the client asked."""
    image = photos(3)[0]
    remote = Runner(f"{served['grpc']}/derain", protocol="tiles:128:32")
    want = Runner(str(demo_onnx), protocol="tiles:128:32")(image)
    assert np.abs(remote(image).astype(int) - want.astype(int)).max() <= 1
    remote.backend.close()


def core_stats(port: int) -> tuple[int, int]:
    """(inference count, execution count) of the core model, from the server's statistics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/derain_core/stats", timeout=10) as r:
        stats = json.loads(r.read())["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_concurrent_requests_are_batched_by_the_core(served, local):
    runner = Runner(f"{served['http']}/derain")
    images = [photos(10 + i)[i % len(ODD_SIZES)] for i in range(16)]
    inferences0, executions0 = core_stats(served["ports"]["http"])
    results, errors = [None] * 16, []

    def work(i):
        try:
            results[i] = runner(images[i])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for image, result in zip(images, results):
        assert np.abs(result.astype(int) - local(image).astype(int)).max() <= 1
    runner.backend.close()
    inferences, executions = core_stats(served["ports"]["http"])
    inferences, executions = inferences - inferences0, executions - executions0
    # one core inference per photo (square-pad: one padded image each), and a cost query from each front
    # instance that had not asked the core yet (none when the module's earlier tests ran)
    assert 16 <= inferences <= 16 + 4
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no dynamic batching"


def core_process(repo: Path, core: str = "derain_core"):
    """The core model's stub process (psutil): the Python-backend stub whose command line names its model.py."""
    import psutil

    model = str(repo / core / "1" / "model.py")
    found = [p for p in psutil.process_iter(["cmdline"]) if model in " ".join(p.info["cmdline"] or [])]
    assert len(found) == 1, found
    return found[0]


def status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def ask_core_cost(port: int):
    """The core's answer to a cost query, asked directly over HTTP."""
    import tritonclient.http as http

    from ast_deploy.serving.core import read_cost_answer

    client = http.InferenceServerClient(f"127.0.0.1:{port}")
    probe = http.InferInput("input", [1, 3, 64, 64], "FP32")
    probe.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
    answer = client.infer("derain_core", [probe], outputs=[http.InferRequestedOutput("COST")]).as_numpy("COST")
    client.close()
    return read_cost_answer(answer)


def test_served_plan_uses_the_cost_measured_in_the_core(served, demo_onnx):
    """The core measures its own cost (in its own process) and the front plans with it: a photo whose
    whole run exceeds the served budget is tiled on the server as make_plan says with the core's
    numbers, and the core's peak resident memory stays within the budget."""
    import tritonclient.grpc as grpc

    from ast_deploy.backends import open_backend
    from ast_deploy.budget import measure_cost, parse_size
    from ast_deploy.planning import Limits, make_plan
    from ast_deploy.tiling import count_tiles
    from ast_deploy.protocols import parse_protocol

    cost, budget = ask_core_cost(served["ports"]["http"])
    assert budget == parse_size(SERVED_BUDGET)
    with open_backend(str(demo_onnx), "cpu", providers="cpu") as backend:  # ONNX Runtime in this process
        here = measure_cost(backend, use_cache=False)
    assert 0.5 < cost.bytes_per_pixel / here.bytes_per_pixel < 2, (cost, here)

    photo = photos(6)[0]
    photo = np.concatenate([np.concatenate([photo] * 3, 1)[:, :420]] * 4)[:300]  # 300x420
    plan = make_plan(300, 420, parse_protocol(PROTOCOL), Limits(budget, cost, ((64, 64), (1 << 30, 1 << 30))), 64)
    assert plan.tiled_to_fit, plan  # the whole run (512x512) does not fit 192 MiB at the core's cost
    core = core_process(served["repo"])
    inferences = core_stats(served["ports"]["http"])[0]
    base = core.memory_info().rss
    Path(f"/proc/{core.pid}/clear_refs").write_text("5")  # reset the core's peak-RSS mark (VmHWM)
    client = grpc.InferenceServerClient(f"127.0.0.1:{served['ports']['grpc']}")
    tensor = grpc.InferInput("IMAGE", list(photo.shape), "UINT8")
    tensor.set_data_from_numpy(photo)  # the whole photo, no PROTOCOL: the server plans
    got = client.infer("derain", [tensor]).as_numpy("OUTPUT_IMAGE")
    client.close()
    peak = status_bytes(core.pid, "VmHWM:") - base
    print(f"core cost {cost.bytes_per_pixel:.0f} B/pixel (here {here.bytes_per_pixel:.0f}); plan {plan.protocol}; "
          f"core peak +{peak / 2 ** 20:.0f} MiB on a {SERVED_BUDGET} budget")
    assert peak <= budget, f"the core grew by {peak / 2 ** 20:.0f} MiB over its {SERVED_BUDGET} budget"
    want = Runner(str(demo_onnx), protocol=str(plan.protocol), max_memory="unlimited")(photo)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # the plan of the core's numbers
    tiles = count_tiles(*photo.shape[:2], plan.protocol)
    assert core_stats(served["ports"]["http"])[0] - inferences >= tiles > 1  # tiles, not one whole run


def test_core_answers_each_calls_measured_peak_with_its_cost(served, demo_onnx):
    """An image request to the python core that also asks for COST gets the core's cost and the
    peak the core measured for that call (its stub's resident set): what the front's Runner checks
    each tile against. The output is the network's."""
    import tritonclient.http as http

    from ast_deploy.backends import open_backend
    from ast_deploy.serving.core import read_cost_answer, read_used

    x = np.random.default_rng(3).random((2, 3, 128, 192), dtype=np.float32)
    client = http.InferenceServerClient(f"127.0.0.1:{served['ports']['http']}")
    tensor = http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("derain_core", [tensor], outputs=[http.InferRequestedOutput("output"),
                                                            http.InferRequestedOutput("COST")])
    client.close()
    answer = result.as_numpy("COST")
    assert answer.shape == (2, 4)
    cost, _ = read_cost_answer(answer)
    used, predicted = read_used(answer), cost.of(2, 128, 192)
    assert used is not None and 0.3 * predicted < used < 1.2 * predicted, (used, predicted)
    with open_backend(str(demo_onnx), "cpu", providers="cpu") as backend:
        assert np.abs(result.as_numpy("output") - backend.infer(x)).max() < 1e-4


def raw_http(port: int, path: str, body: bytes, headers: dict) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def truncated_request(port: int) -> str:
    """An HTTP request whose IMAGE declares 20x30x3 bytes of binary data, of which the body holds 100."""
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [20, 30, 3], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 1800}}]}).encode()
    body = header + bytes(100)
    status, text = raw_http(port, "/v2/models/derain/infer", body,
                            {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    assert status >= 400, (status, text)
    return text


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10) as r:
        return r.status == 200


def test_malformed_requests_get_errors_and_the_server_keeps_serving(served, local):
    """Every kind of bad request gets an error that names the problem; the server stays ready and the
    next good request (and odd-sized ones) are answered correctly."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(f"127.0.0.1:{served['ports']['grpc']}")

    def request(model="derain", **arrays):
        inputs = []
        for name, (array, dtype) in arrays.items():
            tensor = grpc.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs, client_timeout=120)  # bounded, even where a check is missing

    nan = np.full((3, 20, 30), 0.5, np.float32)
    nan[1, 4, 7] = np.nan
    huge = np.zeros((4100, 8200, 3), np.uint8)  # 33.6 MP: 192 MiB of buffers in and out, over the budget
    bad = {  # what: (arrays, words the error must contain)
        "wrong dtype": (dict(IMAGE=(np.zeros((20, 30, 3), np.float32), "FP32")), ["IMAGE", "FP32"]),
        "wrong rank": (dict(IMAGE=(np.zeros((20, 30), np.uint8), "UINT8")), ["IMAGE", "shape"]),
        "wrong channels": (dict(INPUT=(np.zeros((4, 20, 30), np.float32), "FP32")), ["INPUT", "shape"]),
        "zero-sized": (dict(IMAGE=(np.zeros((0, 30, 3), np.uint8), "UINT8")), ["IMAGE is empty"]),
        "NaN": (dict(INPUT=(nan, "FP32")), ["NaN", "y=4, x=7"]),
        "Inf": (dict(INPUT=(np.full((3, 8, 8), np.inf, np.float32), "FP32")), ["192 non-finite", "Inf"]),
        "beyond the budget": (dict(IMAGE=(huge, "UINT8")), ["4100x8200", "budget of 192MiB"]),
        "missing input": (dict(PROTOCOL=(np.array([b"pad:64"], dtype=np.object_), "BYTES")), ["exactly one of"]),
        "both inputs": (dict(IMAGE=(np.zeros((20, 30, 3), np.uint8), "UINT8"),
                             INPUT=(np.zeros((3, 20, 30), np.float32), "FP32")), ["exactly one of", "IMAGE and INPUT"]),
        "bad protocol": (dict(INPUT=(np.zeros((3, 20, 30), np.float32), "FP32"),
                              PROTOCOL=(np.array([b"stretch:7"], dtype=np.object_), "BYTES")), ["stretch:7"]),
        "wrong model name": (dict(model="nosuchmodel", IMAGE=(np.zeros((20, 30, 3), np.uint8), "UINT8")),
                             ["nosuchmodel"]),
    }
    answered = {}
    for what, (arrays, words) in bad.items():
        with pytest.raises(InferenceServerException) as caught:
            request(**arrays)
        answered[what] = message = caught.value.message()
        assert all(word in message for word in words), (what, message)
    del huge
    answered["truncated body"] = message = truncated_request(served["ports"]["http"])
    assert "IMAGE" in message and "bytes" in message, message
    print(f"{len(answered)} malformed requests, each answered with an error naming it:")
    for what, message in answered.items():
        print(f"  {what}: {message[:150]}")
    assert served["process"].poll() is None and ready(served["ports"]["http"])
    for h, w in [(1, 1), (5, 3), (150, 70)]:  # odd sizes are served, not refused
        photo = (photos(4)[1] if (h, w) == (150, 70) else np.full((h, w, 3), 77, np.uint8))
        got = request(IMAGE=(photo, "UINT8")).as_numpy("OUTPUT_IMAGE")
        assert got.shape == photo.shape and np.abs(got.astype(int) - local(photo).astype(int)).max() <= 1
    client.close()


def test_restore_and_check_through_the_server(served, local, tmp_path, capsys):
    from ast_deploy.cli import check, restore

    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(photos(5)[:2]):
        Image.fromarray(photo).save(src / f"photo{i}.png")
    out = tmp_path / "out"
    assert restore.main([str(src), "-o", str(out), "--server", f"{served['grpc']}/derain"]) == 0
    for i, photo in enumerate(photos(5)[:2]):
        got = np.asarray(Image.open(out / f"photo{i}.png"))
        assert np.abs(got.astype(int) - local(photo).astype(int)).max() <= 1
    # The gate: the PyTorch demo checkpoint against the served model, as against a file.
    ckpt = REPO_ROOT / "ast_deploy" / "demo" / "weights" / "derain_demo.pth"
    code = check.main([str(ckpt), f"{served['http']}/derain", "--task", "derain", "--sizes", "100x140"])
    assert code == 0, capsys.readouterr().out
    assert restore.main([str(src), "-o", str(tmp_path / "o2"), "--server", f"{served['http']}/nosuchmodel"]) == 2
    assert "no ready model" in capsys.readouterr().err


def test_sigint_stops_the_server_and_leaves_nothing(server_env, demo_onnx, tmp_path):
    repo = tmp_path / "repo"
    write_repository(demo_onnx, repo, name="derain", backend="python", front_instances=1)
    process, _ = start_cli_server(repo, tmp_path / "server.log")
    assert server_processes(repo)
    code, err = stop_cli_server(process, signal.SIGINT)
    assert code == 130 and err.strip().splitlines()[-1] == "ast-serve triton: stopped by SIGINT"
    assert "Traceback" not in err
    assert not server_processes(repo)
    assert not our_shm_files(process.pid)


def test_sigterm_with_requests_in_flight_loses_nothing(server_env, demo_onnx, local, tmp_path):
    """SIGTERM while requests run: each is answered (correctly) or gets a clear error; ast-serve exits
    143 and leaves no server, stub or shared-memory region."""
    import tritonclient.grpc as grpc

    repo = tmp_path / "repo"
    write_repository(demo_onnx, repo, name="derain", backend="python", front_instances=2)
    process, ports = start_cli_server(repo, tmp_path / "server.log")
    images = [photos(20 + i)[i % len(ODD_SIZES)] for i in range(6)]
    outcomes: list = [None] * len(images)

    def send(i):
        client = grpc.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        tensor = grpc.InferInput("IMAGE", list(images[i].shape), "UINT8")
        tensor.set_data_from_numpy(images[i])
        try:
            outcomes[i] = client.infer("derain", [tensor], client_timeout=120).as_numpy("OUTPUT_IMAGE")
        except Exception as e:  # judged below: it must say what happened
            outcomes[i] = e
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    # Each of the two front instances first asks the core its cost (one inference each): a photo has been
    # through the core once the core counts more than two inferences.
    deadline = time.monotonic() + 120
    while (done := core_stats(ports["http"])[0]) <= 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    code, err = stop_cli_server(process, signal.SIGTERM)
    assert done > 2, "no photo went through the core within 120 s"
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a client still waits after the server stopped"
    assert code == 143 and err.strip().splitlines()[-1] == "ast-serve triton: stopped by SIGTERM", err
    assert "Traceback" not in err
    answered = 0
    for image, outcome in zip(images, outcomes):
        if isinstance(outcome, Exception):
            assert "the server is stopping" in str(outcome) or "UNAVAILABLE" in str(outcome), outcome
        else:
            answered += 1
            assert np.abs(outcome.astype(int) - local(image).astype(int)).max() <= 1
    print(f"SIGTERM with {len(images)} requests sent: {answered} answered, "
          f"{len(images) - answered} refused with an error")
    assert answered >= 1  # the one in the core finished
    assert not server_processes(repo)
    assert not our_shm_files(process.pid)


@pytest.mark.slow
def test_load_of_64_clients_no_error_no_leak_batched(server_env, tmp_path):
    """benchmarks/bench_serving.py --load: 64 clients, 500 requests over HTTP then 500 over gRPC, each
    answer compared with the local Runner; server memory after 1,000 requests within 10 % of after 100;
    the core's statistics show batches of more than one request."""
    out = tmp_path / "load.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_serving.py"), "--load",
                             "--out", str(out)], env=cli_env(), capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    r = json.loads(out.read_text())
    for kind in ("http", "grpc"):
        assert r[kind]["clients"] == 64 and r[kind]["requests"] == 500
        assert r[kind]["errors"] == 0 and r[kind]["mismatches"] == 0, r[kind]["first_error"]
    assert r["memory_after_all"] <= 1.10 * r["memory_after_100"], "server memory grew by more than 10 %"
    assert r["core_executions"] < r["core_inferences"] and max(int(b) for b in r["core_batches"]) > 1
