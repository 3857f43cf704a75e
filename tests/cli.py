"""Running the ``fedsparsify`` command as a subprocess, as an operator or a hospital would."""

from __future__ import annotations

import subprocess
import sys

__all__ = ["run_cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, code: int | None = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m fedsparsify ARGS``; asserts the exit code unless ``code`` is None."""
    out = subprocess.run(
        [sys.executable, "-m", "fedsparsify", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if code is not None:
        assert out.returncode == code, out.stderr + out.stdout
    return out
