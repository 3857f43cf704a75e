"""Where a benchmark result came from: the git commit, the command, the machine, the time.

Every results file carries :func:`provenance` so that a committed number can be traced to the
committed code that produced it (a dirty working tree is recorded as such).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["code_changes", "git_commit", "provenance"]

_HERE = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = _HERE) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=True, cwd=cwd
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


#: What a benchmark writes, and may rewrite before the next one in the same checkout: a change
#: there does not make the code that measured a result differ from its commit.
_RESULTS = (":(exclude)benchmarks/results", ":(exclude)docs")


def code_changes(where: Path = _HERE) -> str | None:
    """``git status`` of tracked files other than results, in the checkout holding ``where``
    ('' when nothing changed, None outside a git checkout)."""
    root = _git("rev-parse", "--show-toplevel", cwd=where)
    if root is None:
        return None
    return _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", *_RESULTS, cwd=Path(root)
    )


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    """The commit (``None`` outside a git checkout), whether the code had uncommitted changes
    (results files aside), the command line, the machine and the UTC time."""
    commit = _git("rev-parse", "HEAD")
    status = code_changes()
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "command": " ".join(command if command is not None else sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or ''}",
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def git_commit() -> str:
    """The commit of the source tree this package runs from (``+dirty`` with uncommitted
    changes other than results files; ``unknown`` outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return "unknown"
    status = code_changes()
    return commit + ("+dirty" if status else "")
