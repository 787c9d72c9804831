"""Explaining one shared model from several threads at once (the dashboard's sessions).

Two kinds of shared state are touched by an explanation:

* Captum's layer methods (LayerIntegratedGradients, LayerGradCam) register forward hooks on a module
  of the model. A module's hooks fire for every forward pass through it, in whatever thread: while
  one session's LayerIG hook is attached, another session's prediction, featurization or explanation
  through that module gets the first session's tensors in place of its own (wrong numbers or a shape
  error; tests/explain/test_concurrency.py). A lock around the hooked sections would not be enough,
  since every plain forward pass anywhere would have to take it too. ``thread_scoped(layer)`` is what
  the explainer hands to Captum instead: hooks registered through it act only in the thread that
  registered them and are no-ops for everyone else, so nothing else has to lock. (A forward pass runs
  in the calling thread; nn.DataParallel, whose replicas run in worker threads, is not supported: the
  hook would not fire and Captum fails loudly.)
* Eval mode: attributions are of the deterministic model, so explanations switch a model in training
  mode to eval and back. ``eval_mode(model)`` counts the users per model under a lock: the first one
  in switches, the last one out restores, and a model already in eval mode is never written to.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from torch import nn

__all__ = ["eval_mode", "thread_scoped"]


class _ThreadScopedLayer(nn.Module):
    """Stands for `layer` when Captum registers its hooks: they go onto `layer` but run only in the
    registering thread. Captum only registers hooks on the layer it is given and uses it as a key."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    @staticmethod
    def _scoped(hook: Callable[..., Any]) -> Callable[..., Any]:
        owner = threading.get_ident()

        def scoped(*args: Any, **kwargs: Any) -> Any:
            return hook(*args, **kwargs) if threading.get_ident() == owner else None

        return scoped

    def register_forward_hook(self, hook, *args, **kwargs):  # type: ignore[override]
        return self.layer.register_forward_hook(self._scoped(hook), *args, **kwargs)

    def register_forward_pre_hook(self, hook, *args, **kwargs):  # type: ignore[override]
        return self.layer.register_forward_pre_hook(self._scoped(hook), *args, **kwargs)


def thread_scoped(layer: nn.Module) -> nn.Module:
    """`layer` for a Captum layer method: its hooks act in the calling thread only."""
    return _ThreadScopedLayer(layer)


_MODE_LOCK = threading.Lock()
_MODE_USERS: dict[nn.Module, list] = {}  # model -> [users, its mode before the first one]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode for the block, safe when blocks of several threads overlap: the mode the
    model had before the first block is restored when the last one ends."""
    with _MODE_LOCK:
        entry = _MODE_USERS.setdefault(model, [0, model.training])
        if entry[0] == 0 and model.training:
            model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _MODE_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _MODE_USERS[model]
                if entry[1]:
                    model.train(True)
