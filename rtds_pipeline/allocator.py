"""How the ingest process hands freed memory back to the OS (peak RSS, issue 3).

A window allocates and frees ~6 MB Arrow buffers on four threads. Arrow's default pool (mimalloc)
keeps much of what was freed; jemalloc, which pyarrow also ships, can be told to hand pages back
within `DIRTY_DECAY_MS` and to skip the "muzzy" stage in between (pages released with
MADV_FREE, which Linux keeps counting in RSS until memory runs short). Peak RSS of a 2M-event
window, side by side (`python -m bench.memory`): mimalloc 392 MB at 108k events/s, this 310 MB at
99k. (Skipping the muzzy stage saved ~50 MB while the batch buffers were Python `bytes`; with
them in Arrow's pool it measures 0-12 MB, within the runs' noise. Setting the options here also
gives jemalloc's first arena, created at import, the same decay as the others.)

jemalloc reads its options once, when pyarrow is imported, from JE_ARROW_MALLOC_CONF:
`configure_jemalloc()` runs from the package's `__init__`, before anything imports pyarrow.
A value the user set is kept. Arrow's pool itself is switched per process by the first window
(`return_memory_promptly`), unless ARROW_DEFAULT_MEMORY_POOL chose one.
"""

from __future__ import annotations

import functools
import os
import sys

DIRTY_DECAY_MS = 200  # 0 ms: 303 vs 310 MB at -13 % of the speed; 100 ms: -9 MB, within the noise
JEMALLOC_CONF = f"dirty_decay_ms:{DIRTY_DECAY_MS},muzzy_decay_ms:0"
_conf = {"applied": False}


def configure_jemalloc() -> None:
    """Set Arrow's jemalloc options, if pyarrow is not loaded yet (they are read only then)."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("JE_ARROW_MALLOC_CONF", JEMALLOC_CONF)
        _conf["applied"] = True


@functools.cache
def return_memory_promptly() -> None:
    """Process-wide, once: Arrow's default pool becomes jemalloc, unless
    ARROW_DEFAULT_MEMORY_POOL already chose one. If pyarrow was imported before this package
    (the options above came too late), arenas created from now on decay in DIRTY_DECAY_MS, the
    muzzy stage included."""
    import pyarrow as pa  # here, not at the top: this module runs before pyarrow may load

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        if not _conf["applied"]:
            pa.jemalloc_set_decay_ms(DIRTY_DECAY_MS)
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc: keep its default
        return
