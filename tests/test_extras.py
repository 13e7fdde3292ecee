"""The extras in pyproject.toml: they parse, they are consistent with the README's install commands,
and the packages that are real on PyPI resolve (``pip install --dry-run --no-deps --report``).

TensorRT's library wheels (``tensorrt-cu12-libs``, ``tensorrt-cu13-libs``) are placeholders on PyPI:
their sdists download the real wheel from https://pypi.nvidia.com while pip builds their metadata,
so they resolve only where NVIDIA's index is reachable. The test checks that ``[tensorrt]`` pulls
them in and that they resolve or fail for exactly that reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# pip's words when it cannot reach an index (urllib3 / requests / resolver messages)
OFFLINE = re.compile(r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
                     r"Network is unreachable|Could not fetch URL|ConnectTimeout|ReadTimeout|"
                     r"Failed to establish a new connection|ProxyError")
PLACEHOLDER_LIBS = {"tensorrt-cu12-libs", "tensorrt-cu13-libs"}


def reqs(extra: str) -> list[Requirement]:
    return [Requirement(r) for r in EXTRAS[extra]]


def names(extra: str) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs(extra)}


def test_every_requirement_parses():
    for extra, items in EXTRAS.items():
        for item in items:
            req = Requirement(item)  # raises InvalidRequirement
            assert req.specifier, f"[{extra}] {item}: give a version range"
    for item in PROJECT["dependencies"]:
        Requirement(item)


def test_extras_follow_the_conventions():
    assert set(EXTRAS) >= {"cpu", "gpu", "tensorrt", "tensorrt-cu13", "export", "kernels", "demo", "test",
                           "serving", "ray"}
    assert "triton" not in EXTRAS  # the word names the kernel compiler, not the server
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not core & {"onnxruntime", "onnxruntime-gpu", "torch", "tensorrt"}, core
    assert names("cpu") == {"onnxruntime"}
    assert names("gpu") == {"onnxruntime-gpu", "cuda-python"}
    assert names("tensorrt") == {"tensorrt-cu12"} and names("tensorrt-cu13") == {"tensorrt-cu13"}
    assert "torch" in names("export") and names("kernels") == {"triton"}
    assert names("serving") == {"tritonclient"} and names("ray") == {"ray"} and names("video") == {"av"}
    assert {"http", "grpc"} <= next(iter(reqs("serving"))).extras
    assert "data" in next(iter(reqs("ray"))).extras
    assert names("openvino") == {"openvino"}


def test_test_extra_brings_what_the_tests_need():
    test = {canonicalize_name(r.name): r for r in reqs("test")}
    assert "pytest" in test and "packaging" in test and "onnxruntime-gpu" not in test
    for extra in ("cpu", "export", "kernels", "demo", "serving", "ray", "video", "openvino"):
        for r in reqs(extra):
            mine = test.get(canonicalize_name(r.name))
            assert mine is not None, f"[test] lacks {r} from [{extra}]"
            assert mine.specifier == r.specifier and mine.extras == r.extras, f"[test] {mine} vs [{extra}] {r}"
    # torch's range must keep admitting the CPU build CI installs first
    assert test["torch"].specifier.contains("2.13.0")


def _install_commands(text: str) -> list[str]:
    return re.findall(r'pip install[^\n`]*?-e\s+"\.\[([^\]]*)\]"', text)


@pytest.mark.parametrize("doc", ["README.md", "docs/deploy.md", ".ci/run"])
def test_install_commands_name_real_extras_and_never_both_runtimes(doc):
    path = REPO / doc
    if not path.exists():
        pytest.skip(f"{doc} is not in this tree")
    commands = _install_commands(path.read_text())
    assert commands, f"{doc} has no pip install -e command"
    for command in commands:
        chosen = {e.strip() for e in command.split(",") if e.strip()}
        assert chosen <= set(EXTRAS), f"{doc}: unknown extras {chosen - set(EXTRAS)}"
        runtimes = {"cpu", "test"} & chosen, {"gpu"} & chosen
        assert not (runtimes[0] and runtimes[1]), f"{doc}: {command!r} installs onnxruntime and onnxruntime-gpu"
        assert not {"tensorrt", "tensorrt-cu13"} <= chosen, f"{doc}: {command!r} names both TensorRT builds"


def test_readme_main_command_brings_the_export_side():
    first = _install_commands((REPO / "README.md").read_text())[0]
    assert {"cpu", "export"} <= {e.strip() for e in first.split(",")}, first
    ci = (REPO / ".ci" / "run").read_text()
    assert '"torch==2.13.0"' in ci and '-e ".[test]"' in ci


PIP_TIMEOUT = 120


def _pip_dry_run(requirements: list[str], report: Path, *options: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
           "--disable-pip-version-check", "--quiet", "--report", str(report), *options, *requirements]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wanted() -> dict[str, Requirement]:
    wanted = {}
    for extra in EXTRAS:
        for r in reqs(extra):
            if r.marker is None or r.marker.evaluate():
                wanted.setdefault(str(r), r)
    return wanted


@pytest.fixture(scope="module")
def pip_runs(tmp_path_factory):
    """Every extra's requirements through ``pip install --dry-run --no-deps --report``, in a few pip
    processes run side by side (pip spends its time waiting on the index, and the two TensorRT
    sdists each build their metadata): {group: (returncode, output, report or None)}."""
    tmp = tmp_path_factory.mktemp("pip")
    wanted = sorted(_wanted())
    trt = [r for r in wanted if Requirement(r).name.startswith("tensorrt")]
    rest = [r for r in wanted if r not in trt]
    libs = str(Requirement(EXTRAS["tensorrt"][0])).replace("tensorrt-cu12", "tensorrt-cu12-libs", 1)
    groups = {"pypi-a": rest[::2], "pypi-b": rest[1::2], **{f"pypi-{r}": [r] for r in trt}, "libs": [libs]}
    # tensorrt-cuXX are sdists built with plain setuptools: the installed one saves pip a build
    # environment (the -libs placeholders need theirs: wheel_stub)
    fast = ("--no-build-isolation",) if importlib.util.find_spec("setuptools") else ()
    procs = {g: _pip_dry_run(items, tmp / f"{i}.json", *(fast if g.startswith("pypi-tensorrt") else ()))
             for i, (g, items) in enumerate(groups.items())}
    results = {}
    for i, (g, proc) in enumerate(procs.items()):
        try:
            output, _ = proc.communicate(timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            output += f"\n(pip did not answer within {PIP_TIMEOUT} s: ConnectTimeout)"
        report = tmp / f"{i}.json"
        data = json.loads(report.read_text()) if proc.returncode == 0 and report.exists() else None
        results[g] = (proc.returncode, output, data)
    return results


def _skip_if_offline(rc: int, output: str) -> None:
    if rc != 0 and OFFLINE.search(output):
        pytest.skip("PyPI is unreachable from this machine: " + OFFLINE.search(output).group(0))


def test_extras_resolve_on_pypi(pip_runs):
    """Every extra's requirements resolve on PyPI (the placeholder libraries are not named directly:
    tensorrt-cuXX's own metadata resolves on PyPI; its -libs dependency is the next test's)."""
    got = {}
    for group, (rc, output, data) in pip_runs.items():
        if group == "libs":
            continue
        _skip_if_offline(rc, output)
        assert rc == 0, f"{group}: {output[-3000:]}"
        got.update({canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in data["install"]})
    for r in _wanted().values():
        meta = got.get(canonicalize_name(r.name))
        assert meta is not None, f"{r} did not resolve"
        assert r.specifier.contains(meta["version"], prereleases=True), (str(r), meta["version"])
    # The TensorRT meta-packages pull the bindings and the placeholder libraries at the same version.
    for name in ("tensorrt-cu12", "tensorrt-cu13"):
        deps = {canonicalize_name(Requirement(d).name) for d in got[name].get("requires_dist") or []}
        assert {f"{name}-libs", f"{name}-bindings"} <= deps, (name, deps)


def test_tensorrt_libraries_resolve_only_against_nvidias_index(pip_runs):
    """The -libs packages on PyPI are placeholders: where pypi.nvidia.com is unreachable pip fails
    while building their metadata, with a message naming NVIDIA's index. Where it is reachable (CI
    with NVIDIA's index), they resolve."""
    rc, output, data = pip_runs["libs"]
    if rc == 0:
        assert {canonicalize_name(i["metadata"]["name"]) for i in data["install"]} == {"tensorrt-cu12-libs"}
        return
    if "placeholder" not in output:  # pip never got to the placeholder's own message
        _skip_if_offline(rc, output)
    assert "pypi.nvidia.com" in output and "placeholder" in output, output[-3000:]
