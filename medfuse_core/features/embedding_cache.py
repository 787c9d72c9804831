"""Sentence embeddings cached on disk by content, so a cohort's notes are embedded once.

Key of a sentence: sha256 of the backbone's `identity` (weights + tokenizer + config digests,
pooling, max_tokens, normalisation; see `TextBackbone.identity`) and the sentence text. Training
runs, evaluation and dashboard sessions that use the same text model share the vectors; a changed
model, pooling or truncation length never reads stale ones.

On disk: `folder/<model key[:16]>/` holds `model.json` (the identity, for people) and shards
`shard-*.safetensors`, each with `keys` (uint8 (N, 32): raw sha256 digests) and `embeddings`
(float32 (N, D)). No pickle. A shard is written to a temporary name and renamed into place, so
readers (other processes, other app sessions) only ever see complete shards; writers never touch
each other's files (unique names), and a key written twice is harmless. A miss rescans the folder
for shards other processes wrote since. In front sits an in-memory LRU of rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

__all__ = ["EmbeddingCache", "sentence_key", "model_key"]


class _Backbone(Protocol):  # what the cache needs from a TextBackbone
    identity: str
    embedding_dim: int

    def embed(self, texts: list[str], batch_size: int = 32): ...


def model_key(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def sentence_key(identity: str, text: str, *, _model_key: str | None = None) -> bytes:
    """Raw 32-byte sha256 of (model identity, text)."""
    digest = hashlib.sha256()
    digest.update((_model_key or model_key(identity)).encode("ascii"))
    digest.update(b"\x00")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.digest()


class _ModelShards:
    """The shards of one model identity: an index key -> (shard path, row), refreshed on demand."""

    def __init__(self, folder: Path, identity: str):
        self.folder = folder
        self.index: dict[bytes, tuple[Path, int]] = {}
        self.seen: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / "model.json"
        if not info.exists():
            _atomic_write_bytes(info, json.dumps({"identity": json.loads(identity)}, indent=2).encode())
        self.refresh()

    def refresh(self) -> None:
        from safetensors import safe_open

        for path in sorted(self.folder.glob("shard-*.safetensors")):
            if path.name in self.seen:
                continue
            try:
                with safe_open(str(path), framework="numpy") as fh:
                    keys = fh.get_tensor("keys")
            except Exception as exc:  # a damaged shard costs a recompute, never a crash
                warnings.warn(f"embedding cache: skipping unreadable shard {path}: {exc}", stacklevel=2)
                self.seen.add(path.name)
                continue
            for row, key in enumerate(keys):
                self.index.setdefault(key.tobytes(), (path, row))
            self.seen.add(path.name)

    def read(self, wanted: dict[bytes, tuple[Path, int]]) -> dict[bytes, np.ndarray]:
        from safetensors import safe_open

        by_shard: dict[Path, list[tuple[bytes, int]]] = {}
        for key, (path, row) in wanted.items():
            by_shard.setdefault(path, []).append((key, row))
        out: dict[bytes, np.ndarray] = {}
        for path, items in by_shard.items():
            with safe_open(str(path), framework="numpy") as fh:
                table = fh.get_tensor("embeddings")
            for key, row in items:
                out[key] = np.array(table[row], dtype=np.float32)
        return out

    def write(self, keys: list[bytes], vectors: np.ndarray) -> Path:
        from safetensors.numpy import save_file

        name = f"shard-{os.getpid()}-{uuid.uuid4().hex}.safetensors"
        path = self.folder / name
        tmp = self.folder / f".tmp-{name}"
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        save_file({"keys": key_array, "embeddings": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp))
        os.replace(tmp, path)
        self.seen.add(name)
        for row, key in enumerate(keys):
            self.index.setdefault(key, (path, row))
        return path


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class EmbeddingCache:
    """`get_or_compute(texts, backbone)` -> (N, D) float32, computing only what no one has computed yet."""

    def __init__(self, folder: str | os.PathLike, memory_rows: int = 50_000):
        self.folder = Path(folder)
        self.memory_rows = int(memory_rows)
        self._memory: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._models: dict[str, _ModelShards] = {}
        self._lock = threading.Lock()
        self.hits = 0  # distinct sentences served from memory or disk
        self.misses = 0  # distinct sentences computed by the model

    def _shards(self, identity: str) -> _ModelShards:
        mkey = model_key(identity)
        if mkey not in self._models:
            self._models[mkey] = _ModelShards(self.folder / mkey[:16], identity)
        return self._models[mkey]

    def _remember(self, key: bytes, row: np.ndarray) -> None:
        self._memory[key] = row
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_rows:
            self._memory.popitem(last=False)

    def get_or_compute(self, texts: Sequence[str], backbone: _Backbone, batch_size: int = 32) -> np.ndarray:
        """Embeddings of `texts` in order; duplicates and cached sentences cost no model call."""
        dim = int(backbone.embedding_dim)
        if len(texts) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        identity = backbone.identity
        mkey = model_key(identity)
        keys = [sentence_key(identity, t, _model_key=mkey) for t in texts]
        with self._lock:
            unique = list(dict.fromkeys(keys))
            found: dict[bytes, np.ndarray] = {}
            for key in unique:
                if key in self._memory:
                    self._memory.move_to_end(key)
                    found[key] = self._memory[key]
            missing = [k for k in unique if k not in found]
            on_disk: dict[bytes, tuple[Path, int]] = {}
            todo: list[bytes] = []
            if missing:
                shards = self._shards(identity)
                if any(k not in shards.index for k in missing):
                    shards.refresh()  # another process may have written them meanwhile
                on_disk = {k: shards.index[k] for k in missing if k in shards.index}
                for key, row in shards.read(on_disk).items():
                    found[key] = row
                    self._remember(key, row)
                todo = [k for k in missing if k not in found]
                if todo:
                    first_text: dict[bytes, str] = {}
                    for key, text in zip(keys, texts):
                        first_text.setdefault(key, text)
                    vectors = backbone.embed([first_text[k] for k in todo], batch_size=batch_size)
                    if hasattr(vectors, "detach"):
                        vectors = vectors.detach().cpu().numpy()
                    vectors = np.asarray(vectors, dtype=np.float32)
                    if vectors.shape != (len(todo), dim):
                        raise ValueError(f"backbone returned {vectors.shape}, expected {(len(todo), dim)}")
                    shards.write(todo, vectors)
                    for key, row in zip(todo, vectors):
                        found[key] = row.copy()
                        self._remember(key, found[key])
            self.misses += len(todo)
            self.hits += len(unique) - len(todo)
            return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def clear_memory(self) -> None:
        """Forget the in-memory rows (the disk shards stay)."""
        with self._lock:
            self._memory.clear()
