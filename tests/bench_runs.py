"""A benchmark run as a user runs it (`python -m bench.<name> …`), scratch under `tmp_path`: its
last line must be `RESULT {json}`, which is returned parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench_result(module: str, args: list[str], tmp_path: Path, timeout: float = 240) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
        timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), proc.stdout[-2000:]
    return json.loads(last.removeprefix("RESULT "))
