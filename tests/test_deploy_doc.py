"""Every ``ast-...`` command in docs/deploy.md parses with that tool's own argument parser (found
through the console script's module in pyproject.toml), so the guide cannot drift from the flags."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "deploy.md"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_blocks(text: str) -> list[str]:
    """The fenced code blocks that hold commands (```bash / ```sh / ```shell / ```console)."""
    return re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, flags=re.M | re.S)


def ast_commands(text: str) -> list[list[str]]:
    commands = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, "#"
            segment = []
            for token in list(lexer) + [";"]:
                if token and set(token) <= set(";&|"):
                    while segment and ENV_ASSIGNMENT.match(segment[0]):
                        segment.pop(0)
                    if segment and segment[0].startswith("ast-"):
                        commands.append(segment)
                    segment = []
                else:
                    segment.append(token)
    return commands


def tool_parser(tool: str):
    assert tool in SCRIPTS, f"{tool} is not a console script in pyproject.toml"
    module = importlib.import_module(SCRIPTS[tool].split(":")[0])
    factory = getattr(module, "build_parser", None) or getattr(module, "parser", None)
    assert callable(factory), f"{module.__name__} exposes no build_parser()/parser()"
    return factory()


COMMANDS = ast_commands(DOC.read_text()) if DOC.exists() else []


def test_the_guide_has_commands_for_every_step():
    tools = {c[0] for c in COMMANDS}
    assert {"ast-doctor", "ast-export", "ast-build", "ast-check", "ast-restore", "ast-bench"} <= tools, tools
    flags = {t for c in COMMANDS for t in c}
    assert {"--dla-core", "--gpu-fallback", "--hardware-compat", "--timing-cache", "--plugins"} <= flags


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_command_parses(argv):
    parser = tool_parser(argv[0])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv[1:])
    except SystemExit as e:  # argparse: 2 on a bad command line (0 for --help / --version)
        assert e.code == 0, f"{' '.join(argv)}\n{err.getvalue()}"


def test_extraction_sees_chains_env_and_comments():
    text = "```bash\nA=1 ast-build m.onnx --plugins off && ast-doctor --json  # note\necho ast-x\n```\n"
    assert ast_commands(text) == [["ast-build", "m.onnx", "--plugins", "off"], ["ast-doctor", "--json"]]
    bad = tool_parser("ast-build")
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        bad.parse_args(["m.onnx", "--no-such-flag"])
