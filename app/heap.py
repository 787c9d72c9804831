"""The server's long-lived heap kept out of Python's full garbage collections (issue 18: browser speed).

By default Streamlit runs gc.collect(2) after every script run, fragment runs included
(runner.postScriptGC). With torch, transformers, plotly and pandas imported, a model loaded and a cohort
read, the server holds about 550,000 objects that such a collection walks: 0.7 s per run on the shared
2-core machine (cProfile of the demo review, a disease switch), holding the GIL, so the browser's "script
finished" message and the next click both wait behind it. .streamlit/config.toml turns that per-run
collection off; Python's own generational collector still frees cycles as they pile up. So that its
occasional full collections do not walk the same heap again, the first finished page run for each
checkpoint collects once and then freezes what is alive (gc.freeze): modules, the model, the cohort.

The cost: an object frozen here that later becomes part of unreachable cyclic garbage (a cache entry of that
first run, evicted) is never freed; that is bounded by what one page run holds, once per checkpoint.
"""

from __future__ import annotations

import gc
import threading

_frozen: set[str] = set()
_lock = threading.Lock()


def freeze_after_first_run(checkpoint: str) -> bool:
    """Collect and freeze the heap the first time a page run for `checkpoint` finishes; True when it did."""
    with _lock:
        if checkpoint in _frozen:
            return False
        _frozen.add(checkpoint)
    gc.collect()
    gc.freeze()
    return True
