"""A writer process for the commit race harness: commits sequences 1..rounds of one source, each
round started together with its rival through a shared barrier, and reports which it won."""

from __future__ import annotations

import time
from typing import Any

import orjson

from rtds_pipeline.lake.commits import Commit, CommitConflict, CommitLog
from rtds_pipeline.lake.storage import open_lake


def race(lake_url: str, options: dict[str, Any] | None, name: str, rounds: int, barrier: Any,
         out: str) -> None:
    log = CommitLog(open_lake(lake_url, options), "events")
    won, lost = [], []
    for seq in range(1, rounds + 1):
        commit = Commit(source="events", window_seq=seq, resume_offset=f"{name}-{seq}",
                        previous_offset=None, first_offset=None, files=[], dead_letter_files=[],
                        events=0, dead_letters=0, offset_updates=0, keepalives=0, reconnects=0,
                        bytes_read=0, max_processed=None, committed_at=time.time(),
                        stop_reason=name)
        barrier.wait(60)
        try:
            log.write(commit)
            won.append(seq)
        except CommitConflict:
            lost.append(seq)
    with open(out, "wb") as f:
        f.write(orjson.dumps({"won": won, "lost": lost}))
