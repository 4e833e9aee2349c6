"""The CLI as a whole: version, help for every command, documentation, error boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineclear import __version__
from lineclear.cli.main import COMMANDS, app
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
REGISTERED = sorted(c.name for c in app.registered_commands)


def test_version(capsys) -> None:
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lineclear {__version__}"


def test_python_dash_m() -> None:
    r = subprocess.run([sys.executable, "-m", "lineclear", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"lineclear {__version__}"


def test_commands_follow_the_pipeline_order() -> None:
    assert set(REGISTERED) <= set(COMMANDS)
    assert {"train", "score"} <= set(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_command_has_help_and_is_documented(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    cmd = next(c for c in app.registered_commands if c.name == name)
    assert (cmd.callback.__doc__ or "").strip(), f"{name} has no help text"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"lineclear {name}" in readme, f"`lineclear {name}` is not documented in README.md"


def test_readme_is_assembled_from_fragments() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_unknown_command_is_a_usage_error(capsys) -> None:
    assert run_cli(["frobnicate"]) == 2


def test_readme_first_screen_names_the_two_commands() -> None:
    first = (ROOT / "README.md").read_text(encoding="utf-8")[:1200]
    assert "make demo" in first and "make test" in first


@pytest.mark.parametrize("name", REGISTERED)
def test_help_reads_at_80_columns(name: str) -> None:
    """No cut option names or defaults, no ``<bool>`` on flags, conventional metavars and usage."""
    r = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "80"}, prog_name="lineclear")
    assert r.exit_code == 0, r.output
    text = r.output
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "<bool>" not in text and "<str>" not in text and "<path>" not in text
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: lineclear {name} [OPTIONS]") and "{" not in usage
    cmd = next(c for c in app.registered_commands if c.name == name)
    import inspect
    from typing import get_args

    # every option's long name is printed whole
    for p in inspect.signature(cmd.callback).parameters.values():
        for meta in get_args(p.annotation)[1:]:
            decls = getattr(meta, "param_decls", None) or ()
            for d in decls:
                for flag in d.split("/"):
                    if flag.startswith("--"):
                        assert flag in text, f"{flag} missing from `lineclear {name} --help`"


def test_train_help_shows_conventional_metavars() -> None:
    import os

    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    text = subprocess.run([sys.executable, "-m", "lineclear", "train", "--help"], capture_output=True, text=True,
                          timeout=120, env=env).stdout
    assert text.splitlines()[0] == "Usage: lineclear train [OPTIONS] VIEW_DIR"
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("-")}
    assert lines["--epochs"].split()[1] == "INTEGER" and lines["--lr"].split()[1] == "FLOAT"
    assert lines["-o,"].split()[2] == "PATH" and lines["--backbone-weights"].split()[1] == "TEXT"
    assert lines["--resume"].split()[1] == "Continue"  # a flag has no metavar
    assert "[default: patchcore]" in text


def test_every_test_the_readme_cites_exists() -> None:
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", text))
    assert len(cited) >= 15
    for file, name in sorted(cited):
        src = (ROOT / "tests" / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", src, re.M), f"README cites {file}::{name}, which does not exist"
