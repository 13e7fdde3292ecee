"""Faults in the middle of a local ast-restore run (issue 24): kill -9, a full disk, a folder that turns
read-only, corrupt caches. Nothing may be lost or half-written, and rerunning the same command
restores only what is missing. The reference is an uninterrupted run of the same command."""

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ast_deploy.cli import restore
from ast_deploy.demo import demo_weights

MODEL = ["--weights", str(demo_weights()), "--task", "derain", "--protocol", "pad:64"]
NAMES = [f"p{i}.png" for i in range(5)]
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _photos(folder: Path) -> Path:
    rng = np.random.default_rng(24)
    folder.mkdir(parents=True)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The inputs and the outputs of one uninterrupted run."""
    root = tmp_path_factory.mktemp("faults")
    src = _photos(root / "in")
    assert restore.main([str(src), "-o", str(root / "ref"), *MODEL, "-q"]) == 0
    return src, {name: (root / "ref" / name).read_bytes() for name in NAMES}


def _assert_whole_outputs(out: Path, want: dict) -> list[str]:
    """Every file in ``out`` is a finished output, byte for byte the uninterrupted run's; no temporary file."""
    names = sorted(p.name for p in out.iterdir())
    assert set(names) <= set(want), names  # no .tmp, nothing else
    for name in names:
        data = (out / name).read_bytes()
        assert data.endswith(PNG_END) and data == want[name], name
    return names


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_kill_9_mid_folder_then_the_same_command_resumes(reference, tmp_path, capsys):
    src, want = reference
    out = tmp_path / "out"
    command = [str(src), "-o", str(out), *MODEL, "-q"]
    child = subprocess.Popen([sys.executable, "-m", "ast_deploy.cli.restore", *command],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None and not any(out.glob("p*.png")):
        time.sleep(0.01)
    child.kill()
    child.communicate(timeout=30)
    done = _assert_whole_outputs(out, want)
    assert 1 <= len(done) < len(NAMES), f"the kill did not land mid-folder: {done}"
    # What a kill inside a write would leave: a dead writer's temporary file (removed by the rerun),
    # and a PNG cut short by some other copy under a final name (restored again).
    cut = [name for name in NAMES if name not in done][-1]
    (out / f".{cut}.{_dead_pid()}.k1ll3d.tmp").write_bytes(want[cut][:100])
    (out / cut).write_bytes(want[cut][: len(want[cut]) // 2])
    kept = {name: (out / name).stat().st_mtime_ns for name in done}

    assert restore.main(command) == 0
    err = capsys.readouterr().err
    assert "removed 1 temporary file(s)" in err and "cut short" in err, err
    assert _assert_whole_outputs(out, want) == NAMES
    assert {name: (out / name).stat().st_mtime_ns for name in done} == kept  # finished outputs not rewritten


def _mount_tmpfs(folder: Path, size: int) -> None:
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")


def _run_stopped(command, capsys):
    code = restore.main(command)
    return code, capsys.readouterr().err


def _check_stopped(code, err, out, src, inputs, want, reason):
    assert code == 1, err
    assert f"cannot write {out}" in err and reason in err and "stopped with" in err, err
    assert "Traceback" not in err
    done = _assert_whole_outputs(out, want)
    assert 1 <= len(done) < len(NAMES), done
    assert _digests(src) == inputs
    return done


def test_a_full_disk_stops_with_a_message_and_no_partial_file(reference, tmp_path, capsys):
    src, want = reference
    inputs = _digests(src)
    out = tmp_path / "small"
    pages = [-(-len(want[name]) // 4096) for name in NAMES[:2]]
    _mount_tmpfs(out, 4096 * (sum(pages) + 1))  # room for the first two outputs, not a third
    try:
        code, err = _run_stopped([str(src), "-o", str(out), *MODEL, "-q"], capsys)
        done = _check_stopped(code, err, out, src, inputs, want, "No space left on device")
    finally:
        subprocess.run(["umount", str(out)], check=True)
    assert done == NAMES[:2]


def test_a_folder_that_turns_read_only_mid_run(reference, tmp_path, capsys):
    src, want = reference
    inputs = _digests(src)
    out = tmp_path / "ro"
    _mount_tmpfs(out, 4 << 20)
    turned = threading.Event()

    def remount_after_the_first_output():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(out.glob("p*.png")) and not subprocess.run(["mount", "-o", "remount,ro", str(out)],
                                                                  capture_output=True).returncode:
                turned.set()  # (a remount fails while a file is open for writing: try again)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=remount_after_the_first_output)
    watcher.start()
    try:
        code, err = _run_stopped([str(src), "-o", str(out), *MODEL, "-q"], capsys)
        watcher.join()
        assert turned.is_set()
        _check_stopped(code, err, out, src, inputs, want, "Read-only file system")
    finally:
        watcher.join()
        subprocess.run(["umount", str(out)], check=True)


def test_a_corrupt_cost_cache_is_ignored_with_a_warning(reference, tmp_path, monkeypatch, capsys):
    """A cache that is JSON but not an object of entries (before: AttributeError, exit 1): the run's
    output is the uninterrupted one, the warning names the file, and the file is rewritten as a JSON
    object. The cost is memoized per process, so the memo is emptied first (as a new process has it)."""
    from ast_deploy import budget

    src, want = reference
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cost.json").write_text("[1, 2]")
    monkeypatch.setenv("AST_DEPLOY_CACHE", str(cache))
    monkeypatch.setattr(budget, "_MEMO", {})
    monkeypatch.setattr(budget, "_cache_warnings", set())  # warned once per process and problem
    assert restore.main([str(src / "p0.png"), "-o", str(tmp_path / "out"), *MODEL, "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{cache / 'cost.json'} is not an ast_deploy cost cache" in err and "ignored" in err, err
    assert "Traceback" not in err
    assert (tmp_path / "out" / "p0.png").read_bytes() == want["p0.png"]
    data = json.loads((cache / "cost.json").read_text())
    assert data["format"] == budget.CACHE_FORMAT and len(data["entries"]) == 1
