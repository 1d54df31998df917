"""Scratch folders of one benchmark process, removed when it exits: a 2M-event window lands
~240 MB, and a few invocations of `make bench` would otherwise fill /tmp."""

from __future__ import annotations

import atexit
import shutil
import tempfile


def scratch_dir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
