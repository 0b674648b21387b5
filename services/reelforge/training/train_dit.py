"""Stage 2: rectified-flow training of the latent video DiT (the teacher), on a frozen VAE and MiniLM.

Objective (rectified flow, Liu et al. 2022; flow matching, Lipman et al. 2022), in the sampler's
convention: x_t = (1 - t) x_0 + t noise, the DiT regresses v = noise - x_0 with MSE. t is drawn
uniform (the default: on these small latents each frame's layout is decided at high t, which must be
trained), logit-normal (SD3, Esser et al. 2024: more weight on mid-range t), or "shifted": uniform t
through the sampler's own time shift (`shift_time`, s = t_shift), so training sees t in the proportions
the shifted Euler sampler visits them (SD3 shifts training and sampling alike at high resolution). A
caption is replaced by the DiT's learned null prompt with probability caption_dropout, which is what
classifier-free guidance extrapolates from at sampling time. AdamW; the EMA weights are saved.

Data: `LatentDataset`, clips rendered once, encoded once by the frozen VAE (posterior means, normalised)
and captioned in a random phrasing each; MiniLM states are computed once per unique caption.

Optional grounding loss (`grounding_weight` > 0): TokenCompose's token loss (Wang et al., CVPR 2024),
which trains each prompt token naming an object to put its cross-attention on that object's pixels,
there from segmentation masks, here from the generator's exact coverage. Every prompt token of an
object's words (its clause: "a red circle moving left") should be read by the video tokens of the cells
that object covers, so that a clause's attributes land on its own object and not on the other one
(two-object prompts: docs/model.md, sections 16-17).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from reelforge.engine.dit import DiTConfig, VideoDiT
from reelforge.engine.sampler import shift_time
from reelforge.engine.text_encoder import TextEncoder
from reelforge.engine.vae import VideoVAE
from reelforge.training.clips import (
    NUM_PHRASINGS,
    TWO_OBJECT_FRACTION,
    ClipSpec,
    object_coverage,
    sample_specs,
)
from reelforge.training.train_vae import Log, OptimConfig, fit, video_batch

MAX_OBJECTS = 2  # clips.sample_specs draws one object or two
REGION_COVERAGE = 0.1  # a DiT token is on an object when the object covers this share of its pixels


@dataclass(frozen=True)
class Grounding:
    """Where each clip's objects are and which prompt tokens name them, for the grounding loss."""

    regions: torch.Tensor  # (N, MAX_OBJECTS, N_tokens) bool: the DiT tokens each object covers
    words: torch.Tensor  # (U, MAX_OBJECTS, L) bool: the prompt tokens of each object's clause


@dataclass(frozen=True)
class LatentDataset:
    latents: torch.Tensor  # (N, Z, T', H', W') normalised VAE posterior means
    caption_index: torch.Tensor  # (N,) index into the unique captions
    text: torch.Tensor  # (U, L, 384) MiniLM token states of each unique caption
    mask: torch.Tensor  # (U, L) bool
    captions: tuple[str, ...]  # (U,) the unique captions, in the rows of text and mask
    grounding: Grounding | None = None  # built only when the grounding loss is on

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_0 (B, Z, T', H', W'), text (B, L, 384), mask (B, L)) for dataset rows `index` (B,)."""
        captions = self.caption_index[index]
        device = self.latents.device
        return self.latents[index.to(device)], self.text[captions.to(device)], self.mask[captions.to(device)]

    def grounding_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regions (B, K, N_tokens), words (B, K, L)) for dataset rows `index` (B,)."""
        if self.grounding is None:
            raise ValueError(
                "this dataset was built without grounding (build_dataset(..., grounding_cell=...))"
            )
        device = self.latents.device
        captions = self.caption_index[index].to(device)
        return self.grounding.regions[index.to(device)], self.grounding.words[captions]


def token_regions(spec: ClipSpec, cell: tuple[int, int, int]) -> torch.Tensor:
    """(MAX_OBJECTS, N_tokens) bool: the DiT tokens, t-major as the DiT flattens them, that each of the
    clip's objects covers; cell = the (frames, px, px) one token sees (VAE factors x DiT patch)."""
    coverage = object_coverage(spec)  # (K, F, S, S)
    k, frames, size, _ = coverage.shape
    ct, cs, _ = cell
    grid = coverage.reshape(k, frames // ct, ct, size // cs, cs, size // cs, cs).mean(axis=(2, 4, 6))
    regions = torch.zeros(MAX_OBJECTS, grid[0].size, dtype=torch.bool)  # (K_max, N_tokens)
    regions[:k] = torch.from_numpy(grid.reshape(k, -1) >= REGION_COVERAGE)
    return regions


def clause_tokens(encoder: TextEncoder, caption: str, spec: ClipSpec, phrasing: int) -> torch.Tensor:
    """(MAX_OBJECTS, L) bool: which of the caption's prompt tokens lie in each object's words."""
    offsets = encoder.tokenizer(
        caption,
        padding="max_length",
        truncation=True,
        max_length=encoder.config.max_length,
        return_offsets_mapping=True,
    )["offset_mapping"]
    words = torch.zeros(MAX_OBJECTS, len(offsets), dtype=torch.bool)  # (K_max, L)
    for k, (start, end) in enumerate(spec.object_spans(phrasing)):
        for i, (a, b) in enumerate(offsets):
            words[k, i] = b > a and start <= a and b <= end  # special and pad tokens span (0, 0)
    return words


@torch.no_grad()
def build_dataset(
    vae: VideoVAE,
    clips: int,
    seed: int,
    batch: int = 16,
    two_object_fraction: float = TWO_OBJECT_FRACTION,
    reading_order: bool = False,
    grounding_cell: tuple[int, int, int] | None = None,
) -> LatentDataset:
    """On the VAE's device: latents, text states and masks (the caption index stays on the CPU); with
    grounding_cell (the (frames, px, px) one DiT token sees), the objects' token regions and clause
    tokens too."""
    device = vae.latent_mean.device
    specs = sample_specs(
        clips, seed=seed, split="train", two_object_fraction=two_object_fraction, reading_order=reading_order
    )
    phrasing = np.random.default_rng([seed, 2]).integers(NUM_PHRASINGS, size=clips)
    captions = [spec.caption(int(p)) for spec, p in zip(specs, phrasing)]
    unique = sorted(set(captions))
    row = {caption: i for i, caption in enumerate(unique)}
    encoder = TextEncoder()
    states = [encoder(unique[i : i + 64]) for i in range(0, len(unique), 64)]  # 64 prompts per MiniLM pass
    latents = [
        vae.normalize(vae.encode(video_batch(specs[i : i + batch]).to(device))[0])
        for i in range(0, clips, batch)
    ]
    grounding = None
    if grounding_cell is not None:
        first = {caption: i for i, caption in reversed(list(enumerate(captions)))}  # a clip per caption
        words = [clause_tokens(encoder, c, specs[first[c]], int(phrasing[first[c]])) for c in unique]
        regions = [token_regions(spec, grounding_cell) for spec in specs]
        grounding = Grounding(torch.stack(regions).to(device), torch.stack(words).to(device))
    return LatentDataset(
        latents=torch.cat(latents),
        caption_index=torch.tensor([row[c] for c in captions]),
        text=torch.cat([s[0] for s in states]).to(device),
        mask=torch.cat([s[1] for s in states]).to(device),
        captions=tuple(unique),
        grounding=grounding,
    )


def sample_batch(
    data: LatentDataset, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    index = torch.randint(len(data.latents), (batch,), generator=generator)  # (B,)
    return data.batch(index)


TSampling = Literal["uniform", "logit_normal", "shifted"]
T_SAMPLINGS: tuple[TSampling, ...] = ("uniform", "logit_normal", "shifted")


@dataclass(frozen=True)
class DiTTrainConfig:
    # 2.6 M parameters, 5.2 MB in float16: a teacher, three students and the 8.0 MB VAE make 28 MB, under
    # the 30 MB the package ships; a step at batch 16 took 0.49 s on 2 CPU cores (5000 steps: 42 min).
    # Four heads of 40 channels, not two of 80: same size, teacher@50 shape 60.5 -> 70 % on 200 held-out
    # prompts (docs/model.md, sections 17-18).
    dit: DiTConfig = DiTConfig(hidden=160, depth=4, heads=4)
    # lr 1e-3: on 16 clips it had by step 300 the loss 5e-4 had at step 400 (docs/model.md, section 3).
    optim: OptimConfig = OptimConfig(steps=5000, lr=1e-3, warmup=200, ema_decay=0.999, log_every=50, cosine=True)
    batch: int = 16
    clips: int = 4096  # encoded once; ~10 clips per training (shape, colour, motion, background)
    caption_dropout: float = 0.1  # as most text-to-image / video models train for guidance
    # Uniform, not SD3's logit-normal: where each latent frame's object goes is decided at t > 0.9, which
    # logit-normal(0, 1) draws 1.4 % of the time; with it, objects faded or jumped between latent frames
    # even on 16 memorised clips (direction 31 %), with uniform t they persisted (69 %) (docs/model.md, 3).
    t_sampling: TSampling = "uniform"
    t_shift: float = 3.0  # for "shifted": distillation's grid shift (DistillConfig.flow_shift)
    # Two-object captions name the left object first (clips.sample_specs), so a clause's place in the
    # caption tells the DiT which object it describes.
    reading_order: bool = False
    # Weight of the grounding loss (module docstring) against the flow-matching MSE; 0 = off. At 0.1 the
    # teacher put two thirds of each word's attention on its object and lost shape, direction and colour,
    # on two-object prompts most (docs/model.md, section 26).
    grounding_weight: float = 0.0


DIT_PRESETS = {
    # The shipped teacher's recipe: t drawn from the sampler's distribution at shift 2 raised teacher@50
    # shape 52 -> 60.5 % and direction 78.5 -> 82.5 % over 200 held-out prompts against uniform t, and its
    # 4-step student's shape 43 -> 52.5 %, at a higher Frechet distance (docs/model.md, sections 14-15).
    "default": DiTTrainConfig(t_sampling="shifted", t_shift=2.0),
    "tiny": DiTTrainConfig(
        dit=DiTConfig(hidden=64, depth=2, heads=2),
        optim=OptimConfig(steps=40, lr=2e-3, warmup=5, ema_decay=0.9, log_every=5),
        batch=8,
        clips=32,
    ),
}


def sample_t(
    batch: int, how: str, generator: torch.Generator, shift: float = DiTTrainConfig.t_shift
) -> torch.Tensor:
    """(B,) training times in [0, 1) drawn as `how` says (see the module docstring)."""
    if how == "logit_normal":
        return torch.sigmoid(torch.randn(batch, generator=generator))  # (B,)
    if how == "shifted":
        return shift_time(torch.rand(batch, generator=generator), shift)  # (B,)
    if how == "uniform":
        return torch.rand(batch, generator=generator)  # (B,)
    raise ValueError(f"t_sampling {how!r}: use one of {', '.join(T_SAMPLINGS)}")


@contextmanager
def cross_attention_inputs(dit: VideoDiT) -> Iterator[list[tuple[torch.Tensor, ...]]]:
    """Collects the (x, text, text_mask) each block's cross-attention is called with, in block order."""
    inputs: list[tuple[torch.Tensor, ...]] = []
    handles = [
        block.cross.register_forward_hook(lambda module, args, out: inputs.append(args))
        for block in dit.blocks
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def grounding_loss(attention: list[torch.Tensor], regions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss: over blocks and every selected (clip, object, word), the mean of
    (1 - the share of the word's head-averaged attention that its object's tokens give it)^2.

    attention: per block (B, heads, N, L); regions (B, K, N) bool; words (B, K, L) bool. 0 with no word."""
    if not bool(words.any()):
        return attention[0].new_zeros(())
    losses = []
    for weights in attention:
        weights = weights.mean(1)  # (B, N, L)
        inside = torch.einsum("bnl,bkn->bkl", weights, regions.to(weights.dtype))  # (B, K, L)
        share = inside / weights.sum(1).unsqueeze(1).clamp(min=1e-8)  # (B, K, L)
        losses.append((1 - share)[words].square().mean())
    return torch.stack(losses).mean()


def flow_matching_loss(
    dit: VideoDiT,
    x0: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    cfg: DiTTrainConfig,
    generator: torch.Generator,
    grounding: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(flow-matching MSE, grounding loss or None when `grounding` = (regions, words) is not given)."""
    # Random numbers come from the CPU generator and move to x0's device: a seed means one run anywhere.
    b, device = x0.shape[0], x0.device
    drop = (torch.rand(b, generator=generator) < cfg.caption_dropout).to(device)  # (B,)
    null_text, null_mask = dit.null_prompt(b)  # (B, L, 384), (B, L)
    text = torch.where(drop[:, None, None], null_text, text)  # (B, L, 384)
    mask = torch.where(drop[:, None], null_mask, mask)  # (B, L)
    t = sample_t(b, cfg.t_sampling, generator, cfg.t_shift).to(device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(device)  # (B, Z, T', H', W')
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise  # (B, Z, T', H', W')
    if grounding is None:
        return F.mse_loss(dit(x_t, t, text, mask), noise - x0), None
    with cross_attention_inputs(dit) as inputs:
        velocity = dit(x_t, t, text, mask)  # (B, Z, T', H', W')
    attention = [block.cross.attention_weights(*args) for block, args in zip(dit.blocks, inputs)]
    regions, words = grounding
    words = words & ~drop[:, None, None]  # a dropped caption has no words to place
    return F.mse_loss(velocity, noise - x0), grounding_loss(attention, regions, words)


def train_dit(
    cfg: DiTTrainConfig, vae: VideoVAE, seed: int, log: Log, init: VideoDiT | None = None
) -> tuple[VideoDiT, dict[str, Any]]:
    """The EMA teacher and its manifest entry, on the VAE's device. The VAE must carry its latent
    statistics. init: a trained teacher of cfg.dit's architecture to go on training (a warm restart of
    the schedule, from its weights) instead of a fresh initialisation."""
    if init is not None and init.config != cfg.dit:
        raise ValueError(f"init is a DiT of {init.config}, not of the config's {cfg.dit}")
    if cfg.dit.latent_channels != vae.config.latent_channels:
        raise ValueError(
            f"DiT latent_channels {cfg.dit.latent_channels} != VAE's {vae.config.latent_channels}"
        )
    if cfg.grounding_weight < 0:
        raise ValueError(f"grounding_weight {cfg.grounding_weight} must be >= 0 (0 turns the loss off)")
    grounded = cfg.grounding_weight > 0
    cell = (
        vae.temporal_factor * cfg.dit.patch[0],
        vae.spatial_factor * cfg.dit.patch[1],
        vae.spatial_factor * cfg.dit.patch[2],
    )
    data = build_dataset(
        vae, cfg.clips, seed, reading_order=cfg.reading_order, grounding_cell=cell if grounded else None
    )
    log(f"[teacher] {len(data.latents)} clips, {len(data.text)} unique captions encoded")
    torch.manual_seed(seed)
    dit = (init if init is not None else VideoDiT(cfg.dit)).to(vae.latent_mean.device)
    generator = torch.Generator().manual_seed(seed)
    grounding_values: list[float] = []

    def loss_at(step: int) -> torch.Tensor:
        index = torch.randint(len(data.latents), (cfg.batch,), generator=generator)  # (B,)
        x0, text, mask = data.batch(index)
        grounding = data.grounding_batch(index) if grounded else None
        loss, placed = flow_matching_loss(dit, x0, text, mask, cfg, generator, grounding)
        if placed is None:
            return loss
        grounding_values.append(placed.item())
        return loss + cfg.grounding_weight * placed

    result = fit(dit, loss_at, cfg.optim, log, "teacher")
    entry = {
        "data_seed": seed,
        "steps": cfg.optim.steps,
        "batch": cfg.batch,
        "clips": cfg.clips,
        "caption_dropout": cfg.caption_dropout,
        "t_sampling": cfg.t_sampling,
        **({"t_shift": cfg.t_shift} if cfg.t_sampling == "shifted" else {}),
        **({"reading_order": True} if cfg.reading_order else {}),
        "parameters": sum(p.numel() for p in dit.parameters()),
        "seconds_per_step": round(result.seconds_per_step, 4),
        "losses": result.losses,  # the total, grounding term included when on
    }
    if grounded:
        every = cfg.optim.log_every
        entry["grounding_weight"] = cfg.grounding_weight
        entry["grounding_losses"] = [  # the grounding term alone, over the same windows as "losses"
            (min(i + every, len(grounding_values)), round(float(np.mean(grounding_values[i : i + every])), 6))
            for i in range(0, len(grounding_values), every)
        ]
    return result.model, entry  # type: ignore[return-value]
