"""sha256 of a file, streamed, once per file version per process.

Weights are hashed to pin them (the notes backbone, a fine-tuned adaptation), to name the checkpoint in
feedback, and to key the dashboard's shared explanations; a 20 MB file read once per page run would be
work on the hot path, so the digest is kept per (resolved path, size, mtime).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """sha256 of a file, streamed; cached per (resolved path, size, mtime) for the process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = value
    return value
