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
    assert [t.name for t in core.input] == ["input"] and [t.name for t in core.output] == ["output"]
    for tensor in list(core.input) + list(core.output):
        assert list(tensor.dims) == [3, -1, -1] and tensor.data_type == pb.TYPE_FP32
    assert core.HasField("dynamic_batching")

    assert front.backend == "python" and front.max_batch_size == 0
    inputs = {t.name: t for t in front.input}
    assert inputs["IMAGE"].data_type == pb.TYPE_UINT8 and list(inputs["IMAGE"].dims) == [-1, -1, 3]
    assert inputs["INPUT"].data_type == pb.TYPE_FP32 and list(inputs["INPUT"].dims) == [3, -1, -1]
    assert all(t.optional for t in front.input)
    assert {t.name for t in front.output} == {"OUTPUT_IMAGE", "OUTPUT"}
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
    write_repository(demo_onnx, repo, name="derain", backend="python", front_instances=4)
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
    assert inferences == 16  # one core inference per photo (square-pad: one padded image each)
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no dynamic batching"


def test_malformed_requests_get_errors_and_the_server_keeps_serving(served, local):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(f"127.0.0.1:{served['ports']['grpc']}")

    def request(**arrays):
        inputs = []
        for name, (array, dtype) in arrays.items():
            tensor = grpc.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer("derain", inputs)

    bad = {
        "wrong dtype": dict(IMAGE=(np.zeros((20, 30, 3), np.float32), "FP32")),
        "wrong rank": dict(IMAGE=(np.zeros((20, 30), np.uint8), "UINT8")),
        "wrong channels": dict(INPUT=(np.zeros((4, 20, 30), np.float32), "FP32")),
        "0-sized": dict(IMAGE=(np.zeros((0, 30, 3), np.uint8), "UINT8")),
        "both inputs": dict(IMAGE=(np.zeros((20, 30, 3), np.uint8), "UINT8"),
                            INPUT=(np.zeros((3, 20, 30), np.float32), "FP32")),
        "no input": dict(PROTOCOL=(np.array([b"pad:64"], dtype=np.object_), "BYTES")),
        "bad protocol": dict(INPUT=(np.zeros((3, 20, 30), np.float32), "FP32"),
                             PROTOCOL=(np.array([b"stretch:7"], dtype=np.object_), "BYTES")),
    }
    for what, arrays in bad.items():
        with pytest.raises(InferenceServerException) as caught:
            request(**arrays)
        assert caught.value.message(), what
    assert "exactly one of IMAGE" in str(caught.value) or "protocol" in str(caught.value).lower()
    assert served["process"].poll() is None
    photo = photos(4)[1]
    got = request(IMAGE=(photo, "UINT8")).as_numpy("OUTPUT_IMAGE")
    assert np.abs(got.astype(int) - local(photo).astype(int)).max() <= 1
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
