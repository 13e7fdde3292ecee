"""ast-restore --ray and restore_dataset on a local Ray cluster bound to loopback (one per module).

The model is the demo checkpoint (no export needed); the references are the single-process
ast-restore and the Runner, run in this process."""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[ray]')")
import psutil  # noqa: E402  (the [test] extra's: a missing one must fail, not skip the Ray tests)

from ast_deploy.cli import restore  # noqa: E402
from ast_deploy.demo import demo_weights  # noqa: E402

MODEL = ["--weights", str(demo_weights()), "--task", "derain", "--protocol", "pad:64"]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _cluster_processes():
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


@pytest.fixture(scope="module")
def ray_cluster():
    """The local cluster ``--ray local`` starts (ast_deploy.scale.cluster), shared by the module's tests:
    ast-restore --ray local joins it as it would join its own. Afterwards no Ray process may be left."""
    from ast_deploy.scale import cluster

    with cluster("local") as ray:
        processes = _cluster_processes()
        names = {p.name() for p in processes}
        assert {"raylet", "gcs_server"} <= names, names
        yield ray, processes
        processes += [p for p in _cluster_processes() if p not in processes]  # workers started meanwhile
    assert not ray.is_initialized()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes):
        time.sleep(0.2)
    left = [f"{p.pid} {p.name()}" for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if left:
        pytest.fail(f"Ray processes left after the cluster stopped: {left}")


def test_local_cluster_listens_on_loopback_only(ray_cluster):
    ray, _ = ray_cluster
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker process has started and listens too
    processes = _cluster_processes()
    assert any("default_worker" in " ".join(p.cmdline()) for p in processes), [p.cmdline()[:2] for p in processes]
    listening = [(p.name(), c.laddr) for p in processes if p.is_running()
                 for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "the cluster's servers were not found"
    assert all(addr.ip in LOOPBACK for _, addr in listening), listening


def _photos(folder):
    rng = np.random.default_rng(5)
    folder.mkdir()
    for name, (h, w) in {"p0": (64, 64), "p1": (80, 96), "p2": (48, 72), "p3": (33, 50)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    import png

    deep = rng.integers(0, 65536, (40, 56, 3), dtype=np.uint16)
    with open(folder / "deep16.png", "wb") as f:
        png.Writer(56, 40, bitdepth=16, greyscale=False).write(f, deep.reshape(40, -1))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_ray_outputs_equal_the_single_process_ones(tmp_path, ray_cluster, capsys):
    src = _photos(tmp_path / "in")
    single, ray_out = tmp_path / "single", tmp_path / "ray"
    assert restore.main([str(src), "-o", str(single), *MODEL]) == 1
    capsys.readouterr()
    ray_out.mkdir()
    sentinel = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(sentinel).save(ray_out / "p3.png")  # exists: kept without --force

    code = restore.main([str(src), "-o", str(ray_out), *MODEL, "--ray", "local", "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "broken.png" in captured.err and "restored 4 image(s)" in captured.err
    assert "skipped 1 that exist" in captured.err and "1 failed" in captured.err
    assert sorted(p.name for p in ray_out.iterdir()) == ["deep16.png", "p0.png", "p1.png", "p2.png", "p3.png"]
    for name in ["deep16.png", "p0.png", "p1.png", "p2.png"]:
        assert (ray_out / name).read_bytes() == (single / name).read_bytes(), name
    assert np.array_equal(np.asarray(Image.open(ray_out / "p3.png")), sentinel)
    assert (ray_out / "deep16.png").read_bytes()[24] == 16  # the PNG header's bit depth: 16 as the source


def test_restore_dataset_equals_the_runner(ray_cluster):
    ray, _ = ray_cluster
    from ast_deploy.runner import Runner
    from ast_deploy.scale import restore_dataset

    rng = np.random.default_rng(9)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 64, 3), (50, 90, 3), (30, 40, 3)]]
    ds = ray.data.from_items([{"id": i, "image": a} for i, a in enumerate(images)])
    rows = sorted(restore_dataset(ds, demo_weights(), task="derain", protocol="pad:64", workers=1).take_all(),
                  key=lambda r: r["id"])
    runner = Runner(demo_weights(), task="derain", protocol="pad:64")
    assert [r["id"] for r in rows] == [0, 1, 2]
    for row, image in zip(rows, images):
        want = runner(image)
        assert row["image"].dtype == np.uint8 and row["image"].shape == image.shape
        assert np.array_equal(row["image"], want)
        assert not np.array_equal(want, image)  # the model changed something


def test_budget_messages_and_usage_errors_are_the_single_machine_ones(tmp_path, ray_cluster, capsys):
    """Under --max-memory the default protocol is re-planned on the workers: the driver says the
    library's warning once and how many photos ran as tiles, as one machine does, and the output is
    the single-process one; a named protocol over --max-memory is a usage error (exit 2, as on one
    machine: test_budget_protocols.py), not a failed file."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (160, 240, 3), dtype=np.uint8)).save(src / "a.png")
    model = ["--weights", str(demo_weights()), "--task", "derain", "--max-memory", "48M"]
    runs = {}
    for kind, extra in (("single", []), ("ray", ["--ray", "local", "--workers", "1"])):
        code = restore.main([str(src), "-o", str(tmp_path / kind), *model, *extra])
        runs[kind] = (code, capsys.readouterr().err)
    for kind, (code, err) in runs.items():
        assert code == 0, err
        assert err.count("does not fit the memory budget") == 1, (kind, err)
        assert "1 photo ran as tiles" in err and "to fit the memory budget (48MiB)" in err, (kind, err)
    assert (tmp_path / "ray" / "a.png").read_bytes() == (tmp_path / "single" / "a.png").read_bytes()
    code = restore.main([str(src), "-o", str(tmp_path / "named"), *model, "--protocol", "square-pad:128",
                         "--ray", "local", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "protocol square-pad:128 was named" in err and "--max-memory" in err, err
    assert "Traceback" not in err and not list((tmp_path / "named").glob("*.png"))


def test_ray_usage_errors(tmp_path, ray_cluster, capsys):
    src = _photos(tmp_path / "in")
    code = restore.main([str(src), "-o", str(tmp_path / "o"), *MODEL, "--ray", "local", "--workers", "9"])
    assert code == 2
    assert "--workers 9" in capsys.readouterr().err
    code = restore.main([str(src), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none.pth"), "--ray", "local"])
    assert code == 2
    assert "none.pth: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        restore.main([str(src), "-o", str(tmp_path / "o"), *MODEL, "--workers", "2"])
    assert e.value.code == 2 and "need --ray" in capsys.readouterr().err


def test_without_ray_the_message_says_what_to_install(tmp_path):
    src = _photos(tmp_path / "in")
    script = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
              "from ast_deploy.cli import restore\n"
              f"sys.exit(restore.main({[str(src), '-o', str(tmp_path / 'o'), *MODEL, '--ray', 'local']!r}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert 'pip install -e ".[ray]"' in result.stderr and "Traceback" not in result.stderr


def test_outputs_on_a_pyarrow_filesystem_uri(tmp_path):
    """OUT as a URI (what a multi-node cluster writes to): the same name rule, --force rule and bytes."""
    from ast_deploy.cli.restore import plan_outputs
    from ast_deploy.images import read_image, write_png
    from ast_deploy.scale import _exists, write_output

    src = _photos(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1.png").write_bytes(b"kept")
    uri = out.as_uri()
    inputs = sorted(src.glob("p*.png"))
    jobs, skipped, failures = plan_outputs(inputs, uri, force=False, exists=_exists)
    assert skipped == [f"{uri}/p1.png"] and not failures
    assert [dst for _, dst in jobs] == [f"{uri}/{name}.png" for name in ("p0", "p2", "p3")]
    assert len(plan_outputs(inputs, uri, force=True, exists=_exists)[0]) == 4
    image = read_image(src / "deep16.png")
    write_output(f"{uri}/deep16.png", image.pixels, image.bit_depth)
    write_png(tmp_path / "local.png", image.pixels, image.bit_depth)
    assert (out / "deep16.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["deep16.png", "p1.png"]  # no temporary file left


# ------------------------------------------------------------------- faults (issue 24)

FAULT_NAMES = [f"f{i}.png" for i in range(6)]


@pytest.fixture(scope="module")
def fault_reference(tmp_path_factory):
    """Six photos and the outputs of one uninterrupted single-process run."""
    root = tmp_path_factory.mktemp("ray-faults")
    rng = np.random.default_rng(44)
    (root / "in").mkdir()
    for name in FAULT_NAMES:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "in" / name)
    assert restore.main([str(root / "in"), "-o", str(root / "ref"), *MODEL, "-q"]) == 0
    return root / "in", {name: (root / "ref" / name).read_bytes() for name in FAULT_NAMES}


def _finished(out):
    """The outputs in ``out`` (and nothing else: no temporary file) with their inodes."""
    return {p.name: p.stat().st_ino for p in out.iterdir()} if out.exists() else {}


def _when_first_output(out, action, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if any(out.glob("f*.png")):
            return action()
        time.sleep(0.005)
    return None


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(fault_reference, tmp_path, ray_cluster, capsys):
    """kill -9 of the actor process in the middle of ast-restore --ray: Ray restarts it and retries its
    images; every output is the single-process one, each reported once, none written twice."""
    src, want = fault_reference
    out = tmp_path / "out"
    seen = {}

    def kill_the_actor():
        actors = [p for p in _cluster_processes() if "_FileRestorer" in " ".join(p.cmdline())]
        seen.update(finished=_finished(out), pids=[p.pid for p in actors])
        for p in actors:
            p.kill()

    watcher = threading.Thread(target=_when_first_output, args=(out, kill_the_actor))
    watcher.start()
    code = restore.main([str(src), "-o", str(out), *MODEL, "--ray", "local", "--workers", "1"])
    watcher.join()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(seen["pids"]) == 1 and 1 <= len(seen["finished"]) < len(FAULT_NAMES), seen
    assert "restored 6 image(s)" in captured.out
    after = _finished(out)
    assert sorted(after) == FAULT_NAMES
    assert {name: after[name] for name in seen["finished"]} == seen["finished"]  # not written again
    for name in FAULT_NAMES:
        assert (out / name).read_bytes() == want[name], name


def test_a_retried_task_does_not_write_its_output_again(fault_reference, tmp_path):
    """The restorer's side of a retry: an output this job already wrote (after ``since``) is left as
    it is; one older than the job (--force over an old output) is written."""
    from ast_deploy.scale import _FileRestorer

    src, want = fault_reference
    restorer = _FileRestorer(str(demo_weights()), dict(task="derain", protocol="pad:64"))
    out = tmp_path / "f0.png"
    out.write_bytes(b"written by this job before its worker died")
    row = {"src": "f0.png", "path": str(src / "f0.png"), "dst": str(out), "out": str(out), "error": "",
           "pixels": np.asarray(Image.open(src / "f0.png")), "bit_depth": 8, "since": time.time() - 60}
    assert restorer(row)["error"] == ""
    assert out.read_bytes() == b"written by this job before its worker died"
    assert restorer({**row, "since": time.time() + 60})["error"] == ""
    assert out.read_bytes() == want["f0.png"]


def test_a_killed_driver_then_the_same_command_restores_only_what_is_missing(fault_reference, tmp_path,
                                                                              ray_cluster, capsys):
    """kill -9 of ast-restore --ray local (its own cluster) mid-run: no Ray process or folder of its
    cluster is left; the same command again keeps the finished outputs, removes a temporary file a
    killed writer left, restores the rest, and the outputs are the single-process ones."""
    src, want = fault_reference
    out = tmp_path / "out"
    command = [str(src), "-o", str(out), *MODEL, "--ray", "local", "--workers", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "ast_deploy.cli.restore", *command],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = {}

    def kill_the_driver():
        below = psutil.Process(driver.pid).children(recursive=True)
        seen.update(finished=_finished(out), processes=below,
                    folders={m for p in below for m in re.findall(r"/tmp/ast-ray-[^/ ]+", " ".join(p.cmdline()))})
        driver.kill()

    try:
        _when_first_output(out, kill_the_driver)
    finally:
        driver.kill()
        driver.wait(timeout=30)
    assert seen, "the driver wrote no output in time"
    assert 1 <= len(seen["finished"]) < len(FAULT_NAMES), seen["finished"]
    assert len(seen["folders"]) == 1, seen["folders"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in seen["processes"]):
        time.sleep(0.2)
    assert not [p.pid for p in seen["processes"] if _alive(p)], "Ray processes outlived their killed driver"
    assert not any(Path(folder).exists() for folder in seen["folders"])

    missing = [name for name in FAULT_NAMES if name not in seen["finished"]]
    stale = out / f".{missing[0]}.{seen['processes'][0].pid}.d0a6ed.tmp"  # a killed writer's leftover
    stale.write_bytes(b"\x89PNG half")
    before = _finished(out)
    assert restore.main(command) == 0  # joins the module's cluster as --ray local does when connected
    captured = capsys.readouterr()
    assert "removed 1 temporary file(s)" in captured.err
    assert f"restored {len(FAULT_NAMES) - len(before) + 1} image(s)" in captured.out
    assert f"skipped {len(before) - 1} that exist" in captured.out
    after = _finished(out)
    assert sorted(after) == FAULT_NAMES
    assert all(after[name] == ino for name, ino in before.items() if name != stale.name)
    for name in FAULT_NAMES:
        assert (out / name).read_bytes() == want[name], name


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
