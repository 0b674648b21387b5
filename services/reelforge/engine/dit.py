"""Latent video DiT: predicts the flow-matching velocity of a noisy video latent given a prompt.

DiT (Peebles & Xie) blocks with AdaLN-Zero conditioning on the timestep plus the pooled prompt (as SD3,
Esser et al. 2024, adds its pooled text embedding to the timestep vector), a cross-attention over the
prompt's token states (PixArt-alpha, Wan2.1), 3D rotary position embedding over (t, h, w) so any of the served
sizes and frame counts runs without a position table, and a learned null prompt for classifier-free
guidance. The model knows nothing of noise schedules: `sampler.py` owns those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 16  # must match VAEConfig.latent_channels
    patch: tuple[int, int, int] = (1, 2, 2)  # (t, h, w): the VAE already pools 4x in time; 2x2 in space
    # gives 64 tokens per latent frame at 64x64 and 256 at 128x128, the most a 2-core CPU can attend over
    hidden: int = 256  # tiny by design: a 4-step 64x64x16 clip must take under a second on 2 CPU cores
    depth: int = 6
    heads: int = 4  # head_dim 64: wide enough to split into t/h/w rotary bands
    mlp_ratio: float = 4.0  # the transformer default
    text_dim: int = 384  # all-MiniLM-L6-v2 hidden size
    text_len: int = 32  # TextEncoderConfig.max_length; the null prompt has this many tokens
    freq_dim: int = 256  # sinusoidal timestep features, as DiT
    pooled_text: bool = True  # add the mean of the prompt's token states to the AdaLN vector (SD3)
    rope_theta: float = 10000.0
    eps: float = 1e-6


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, heads, N, d) attention with a boolean key mask (B, 1, 1, M), True = attend."""
    if hasattr(F, "scaled_dot_product_attention"):  # fused kernels (flash / memory-efficient / CPU)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, heads, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, heads, N, d)


# --------------------------------------------------------------------------- rotary position embedding


def _rope_bands(head_dim: int) -> tuple[int, int, int]:
    """Split head_dim into even (t, h, w) bands; time gets the remainder, as in Wan2.1."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_3d(grid: tuple[int, int, int], head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """Rotation angles (N, head_dim / 2) for a (T, H, W) token grid flattened t-major."""
    angles = []
    for size, band in zip(grid, _rope_bands(head_dim)):
        freqs = theta ** (-torch.arange(0, band, 2, device=device, dtype=torch.float64) / band)  # (band/2,)
        angles.append(torch.outer(torch.arange(size, device=device, dtype=torch.float64), freqs))
    t, h, w = grid
    a_t = angles[0][:, None, None].expand(t, h, w, -1)  # (T, H, W, bt/2)
    a_h = angles[1][None, :, None].expand(t, h, w, -1)  # (T, H, W, bh/2)
    a_w = angles[2][None, None, :].expand(t, h, w, -1)  # (T, H, W, bw/2)
    return torch.cat([a_t, a_h, a_w], dim=-1).reshape(t * h * w, -1).float()  # (N, head_dim/2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, heads, N, d) by angles (N, d/2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, heads, N, d/2) each
    cos, sin = angles.cos(), angles.sin()  # (N, d/2)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, heads, N, d/2, 2)
    return out.flatten(-2).type_as(x)  # (B, heads, N, d)


# --------------------------------------------------------------------------- blocks


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] -> (B, hidden), via DiT's sinusoidal features of 1000 * t."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.freq_dim = cfg.freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(cfg.freq_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        # Pinned to float32: in bf16, 1000 * t loses the small differences between late timesteps.
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, freq_dim/2)
        features = torch.cat([args.cos(), args.sin()], dim=-1)  # (B, freq_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # (B, hidden)


class SelfAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.q_norm = nn.RMSNorm(cfg.hidden // cfg.heads, eps=cfg.eps)  # qk-norm keeps logits bounded
        self.k_norm = nn.RMSNorm(cfg.hidden // cfg.heads, eps=cfg.eps)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
        q = apply_rope(self.q_norm(q), rope)  # (B, heads, N, d)
        k = apply_rope(self.k_norm(k), rope)  # (B, heads, N, d)
        x = _attention(q, k, v, mask=None)  # (B, heads, N, d)
        return self.proj(x.transpose(1, 2).flatten(2))  # (B, N, D)


class CrossAttention(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.hidden, cfg.hidden)
        self.kv = nn.Linear(cfg.hidden, 2 * cfg.hidden)
        self.q_norm = nn.RMSNorm(cfg.hidden // cfg.heads, eps=cfg.eps)
        self.k_norm = nn.RMSNorm(cfg.hidden // cfg.heads, eps=cfg.eps)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)

    def _qkv(self, x: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.q_norm(self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2))  # (B, heads, N, d)
        k, v = self.kv(text).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (B, heads, L, d)
        return q, self.k_norm(k), v

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, text)  # (B, heads, N or L, d)
        x = _attention(q, k, v, mask=text_mask[:, None, None, :])  # (B, heads, N, d)
        return self.proj(x.transpose(1, 2).flatten(2))  # (B, N, D)

    def attention_weights(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, L): how much each video token reads each prompt token in forward(x, text,
        text_mask), for losses on where words land (training/train_dit.grounding_loss)."""
        q, k, _ = self._qkv(x, text)  # (B, heads, N or L, d)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, heads, N, L)
        return scores.masked_fill(~text_mask[:, None, None, :], float("-inf")).softmax(dim=-1)


class DiTBlock(nn.Module):
    """Self-attention and MLP under AdaLN-Zero; cross-attention to the prompt in between (plain pre-norm,
    as PixArt-alpha: the prompt, not the timestep, decides what it reads)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.eps)
        self.attn = SelfAttention(cfg)
        self.norm_cross = nn.LayerNorm(d, eps=cfg.eps)
        self.cross = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.eps)
        hidden_mlp = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden_mlp), nn.GELU(approximate="tanh"), nn.Linear(hidden_mlp, d)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rope: torch.Tensor,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(
            6, dim=-1
        )  # (B, D) each
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), rope)  # (B, N, D)
        x = x + self.cross(self.norm_cross(x), text, text_mask)  # (B, N, D)
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.eps)
        self.linear = nn.Linear(d, math.prod(cfg.patch) * cfg.latent_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, pt*ph*pw*C)


# --------------------------------------------------------------------------- model


class VideoDiT(nn.Module):
    def __init__(self, config: DiTConfig = DiTConfig()) -> None:
        super().__init__()
        cfg = self.config = config
        self.x_embedder = nn.Conv3d(cfg.latent_channels, cfg.hidden, kernel_size=cfg.patch, stride=cfg.patch)
        self.t_embedder = TimestepEmbedder(cfg)
        # The whole-prompt summary reaches every token through AdaLN, which class-conditional DiTs learn
        # fast; the cross-attention still reads individual words.
        self.pooled_embedder = (
            nn.Sequential(nn.Linear(cfg.text_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden))
            if cfg.pooled_text
            else None
        )
        self.text_embedder = nn.Sequential(  # caption projection, as PixArt-alpha
            nn.Linear(cfg.text_dim, cfg.hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(cfg.hidden, cfg.hidden),
        )
        # Stands in for the prompt when a caption is dropped in training and in the unconditional pass
        # of classifier-free guidance; in text-encoder space so it goes through the same projection.
        self.null_text = nn.Parameter(torch.randn(cfg.text_len, cfg.text_dim) * cfg.text_dim**-0.5)
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's recipe: xavier linears, patch embed as a linear, zeroed AdaLN and output layers, so
        every block starts as the identity and the untrained model predicts zero velocity."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def null_prompt(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned empty prompt as (text (B, L, 384), mask (B, L)), all tokens attended."""
        text = self.null_text.unsqueeze(0).expand(batch, -1, -1)  # (B, L, 384)
        mask = torch.ones(batch, self.config.text_len, dtype=torch.bool, device=text.device)  # (B, L)
        return text, mask

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, pt*ph*pw*C) -> (B, C, T, H, W)."""
        (t, h, w), (pt, ph, pw) = grid, self.config.patch
        x = x.view(x.shape[0], t, h, w, pt, ph, pw, self.config.latent_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, t, pt, h, ph, w, pw)
        return x.reshape(x.shape[0], -1, t * pt, h * ph, w * pw)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """
        x: (B, C, T, H, W) noisy latent; t: (B,) flow time in [0, 1] (1 = pure noise);
        text: (B, L, 384) prompt token states; text_mask: (B, L) bool. Returns velocity (B, C, T, H, W).
        """
        x = self.x_embedder(x)  # (B, D, T/pt, H/ph, W/pw)
        grid = tuple(x.shape[2:])  # (T', H', W'), N = T' * H' * W'
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        rope = rope_3d(
            grid, self.config.hidden // self.config.heads, self.config.rope_theta, x.device
        )  # (N, d/2)
        c = self.t_embedder(t)  # (B, D)
        if self.pooled_embedder is not None:
            weights = text_mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled = (text.to(x.dtype) * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, 384)
            c = c + self.pooled_embedder(pooled)  # (B, D)
        text = self.text_embedder(text.to(x.dtype))  # (B, L, D)
        for block in self.blocks:
            x = block(x, c, text, text_mask, rope)  # (B, N, D)
        x = self.final_layer(x, c)  # (B, N, pt*ph*pw*C)
        return self.unpatchify(x, grid)  # (B, C, T, H, W)


def DiT_Mini(**kw: object) -> VideoDiT:
    return VideoDiT(DiTConfig(**kw))  # type: ignore[arg-type]


def DiT_Small(**kw: object) -> VideoDiT:
    return VideoDiT(DiTConfig(**{"hidden": 384, "depth": 12, "heads": 6, **kw}))  # type: ignore[arg-type]
