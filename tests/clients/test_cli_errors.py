"""Errors a new user meets come as one clear line, and help looks the same everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsparsify.cli import app
from fedsparsify.clients.launcher import free_port
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.errors import TransportError


def _run(*args: str) -> tuple[int, str]:
    env = {"FEDSPARSIFY_ADMIN_TOKEN": "t", "COLUMNS": "200"}
    result = CliRunner().invoke(app, list(args), env=env, prog_name="fedsparsify")
    return result.exit_code, result.output


def test_federation_create_without_spec_or_name_says_what_to_give() -> None:
    code, out = _run("federation", "create", "--server", "http://127.0.0.1:9")
    assert code == 2
    assert "give a spec file (see examples/specs/) or at least --name" in out


def test_a_bad_spec_gives_one_line_per_field_without_pydantic_noise(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "", "rounds": 0, "model": {"kind": "tree"}}))
    code, out = _run("federation", "create", "--server", "http://127.0.0.1:9", "--spec", str(spec))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0] == "error: invalid federation spec"
    assert f"error: {spec}: name: name is empty (or only whitespace)" in lines
    assert f"error: {spec}: rounds: Input should be greater than or equal to 1" in lines
    assert any(line.startswith(f"error: {spec}: model.kind: Input should be") for line in lines)
    assert "pydantic" not in out and "http" not in out.replace("http://127.0.0.1:9", "")
    spec.write_text("{not json")
    code, out = _run("federation", "create", "--server", "http://127.0.0.1:9", "--spec", str(spec))
    assert code == 1 and out.startswith(f"error: {spec} is not valid JSON")


def test_a_wrong_log_level_is_refused_before_anything_runs() -> None:
    code, out = _run(
        "client", "--server", "http://127.0.0.1:9", "--data", ".", "--log-level", "verbose"
    )
    assert code == 2
    assert "'verbose' is not one of" in out and "Traceback" not in out


def test_connection_errors_name_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        AggregatorClient(url, retries=0) as client,
        pytest.raises(TransportError, match=f"cannot reach the aggregator at {url}"),
    ):
        client.health()
    code, out = _run("federation", "list", "--server", url)
    assert code == 1 and f"cannot reach the aggregator at {url}" in out


@pytest.mark.parametrize("command", ["crypto", "accuracy", "latency"])
def test_bench_help_is_in_the_style_of_the_other_commands(command: str) -> None:
    code, out = _run("bench", command, "--help")
    assert code == 0
    assert f"Usage: fedsparsify bench {command} [OPTIONS]" in out
    assert "usage: fedsparsify" not in out and "--quick" in out
