"""reelforge-mini: the built-in text-to-video engine, small enough to serve from a CPU.

prompt -> MiniLM token states -> Euler flow-matching sampling of a latent video DiT (with classifier-free
guidance) -> causal 3D VAE decode -> uint8 frames. Without a checkpoint the weights are a fixed-seed
random initialization: every worker process gets identical weights and the output looks like noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reelforge.engine.checkpoints import is_weights_path, load_engine_weights
from reelforge.engine.dit import DiT_Mini, VideoDiT
from reelforge.engine.interface import GenerationRequest, StepCallback, StepEvent
from reelforge.engine.sampler import sample
from reelforge.engine.text_encoder import TextEncoder
from reelforge.engine.vae import VAE_Mini, VideoVAE

INIT_SEED = 0  # weights seed when no checkpoint is given; identical across workers and restarts
FLOW_SHIFT = 1.0  # no time shift: the clips are small, and a few-step student is trained unshifted
RANDOM_INIT_VERSION = "0.1.0-random-init"


class MiniEngine:
    name = "reelforge-mini"

    def __init__(self, device: str = "cpu", threads: int = 0, checkpoint: Path | None = None) -> None:
        """threads > 0 sets torch's intra-op threads for this process; 0 keeps torch's default.
        checkpoint: a weights folder or one DiT file in it (safetensors and a manifest, written by
        engine/checkpoints.py), or a torch.save'd dict {"dit": ..., "vae": ..., "version": str (optional)}."""
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG untouched
            torch.manual_seed(INIT_SEED)
            self.dit: VideoDiT = DiT_Mini()
            self.vae: VideoVAE = VAE_Mini()
        self.version = RANDOM_INIT_VERSION
        if checkpoint is not None and is_weights_path(Path(checkpoint)):
            self.dit, self.vae, self.version = load_engine_weights(Path(checkpoint))
        elif checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            self.dit.load_state_dict(state["dit"])
            self.vae.load_state_dict(state["vae"])
            self.version = str(state.get("version", Path(checkpoint).stem))
        self.text_encoder = TextEncoder()
        for module in (self.dit, self.vae, self.text_encoder):
            module.to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, on_step: StepCallback) -> np.ndarray:
        """Frames as uint8 (num_frames, height, width, 3). Exceptions from on_step propagate untouched."""
        steps = request.num_steps
        latent_shape = self._latent_shape(request)

        on_step(StepEvent("encoding_prompt", 0, steps))
        cond, uncond = self._encode_prompts(request)

        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        noise = torch.randn((1, *latent_shape), generator=generator).to(self.device)  # (1, Z, T/4, H/4, W/4)

        def velocity(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
            text, mask = cond if conditional else uncond
            return self.dit(x, t, text, mask)  # (1, Z, T/4, H/4, W/4)

        on_step(StepEvent("denoising", 0, steps))
        latents = sample(
            velocity,
            noise,
            num_steps=steps,
            guidance_scale=request.guidance_scale,
            shift=FLOW_SHIFT,
            on_step=lambda i: on_step(StepEvent("denoising", i, steps)),
        )  # (1, Z, T/4, H/4, W/4)

        on_step(StepEvent("decoding", steps, steps))
        video = self.vae.decode(self.vae.denormalize(latents))  # (1, 3, T, H, W) in ~[-1, 1]
        frames = ((video[0].float() + 1) / 2).clamp(0, 1).mul(255).round()  # (3, T, H, W)
        return frames.permute(1, 2, 3, 0).to(torch.uint8).cpu().numpy()  # (T, H, W, 3)

    def _latent_shape(self, request: GenerationRequest) -> tuple[int, int, int, int]:
        # The DiT's 2x2 patches on a 4x-downsampled latent need sizes that are multiples of 8.
        if request.width % 8 or request.height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {request.width}x{request.height}")
        if request.num_frames % self.vae.temporal_factor or request.num_frames <= 0:
            raise ValueError(f"num_frames must be a positive multiple of 4, got {request.num_frames}")
        return self.vae.latent_shape(request.num_frames, request.height, request.width)

    def _encode_prompts(
        self, request: GenerationRequest
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((text, mask) for the prompt, (text, mask) for the unconditional pass): the negative prompt
        when one is given, else the DiT's learned null prompt. The negative is only encoded if used."""
        use_negative = request.guidance_scale > 1.0 and bool(request.negative_prompt.strip())
        prompts = [request.prompt, request.negative_prompt] if use_negative else [request.prompt]
        text, mask = self.text_encoder(prompts)  # (P, L, 384), (P, L)
        cond = (text[:1], mask[:1])
        uncond = (text[1:], mask[1:]) if use_negative else self.dit.null_prompt(1)
        return cond, uncond


def load_engine(device: str = "cpu", threads: int = 0, checkpoint: Path | None = None) -> MiniEngine:
    return MiniEngine(device=device, threads=threads, checkpoint=checkpoint)
