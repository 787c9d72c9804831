"""Tiny random transformers text models written to a folder by the tests, never downloaded.

A 2-layer BERT (encoder, [CLS] ... [SEP]) and a 2-layer Llama (decoder, <s> ..., no pad token of its
own), each with a WordLevel tokenizer trained in the test on the given texts (lower-cased, split on
whitespace and punctuation) and wrapped in PreTrainedTokenizerFast: `save_pretrained` folders like
any local checkpoint, so they go through the same loading path as a real model on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

_SPECIAL_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SPECIAL_LLAMA = ["<unk>", "<s>", "</s>"]


def _word_level(texts: Iterable[str], specials: list[str], unk: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(vocab_size=2000, special_tokens=specials))
    return tok


def save_tiny_bert(folder: str | Path, texts: Iterable[str], seed: int = 0) -> Path:
    from tokenizers import processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = _word_level(texts, _SPECIAL_BERT, "[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    folder = Path(folder)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: str | Path, texts: Iterable[str], seed: int = 0, *, hidden: int = 32, layers: int = 2,
                    heads: int = 2, intermediate: int = 64, dtype: torch.dtype = torch.float32) -> Path:
    """The sizes are arguments so benchmarks/notes_lm_step.py can build a small (not tiny) random decoder."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tok = _word_level(texts, _SPECIAL_LLAMA, "<unk>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # no pad token, like Llama's own tokenizers: TextBackbone pads with </s> (left padding, "last" pooling)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    folder = Path(folder)
    LlamaModel(config).to(dtype).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
