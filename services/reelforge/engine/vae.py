"""Causal 3D video VAE: 4x spatial and 4x temporal compression into a small latent the DiT denoises.

Every convolution is causal in time (padded on the past side only) and every norm is per voxel, so a
latent frame depends on its own and earlier video frames only, and a decoded frame on its own and
earlier latent frames only. That is what lets a later model stream or extend clips chunk by chunk.

Space is compressed by patchifying, as LTX-Video's VAE does: 4x4 pixel patches go in as 48 channels
(pixel unshuffle) and come out by depth-to-space, so every layer runs at the latent's spatial size and
only time is downsampled (2x, twice) by strided causal convolutions. Against the earlier design (2x2
patches, then learned 2x spatial stages) it is cheaper, not yet shown to be better: 0.57 s against
0.83 s per training step at 8 frames, batch 8, and about the same 20.4 dB after 400 steps of the same
loss (2 CPU cores, 2026-11-21). What made the VAE keep objects was the loss (training/train_vae.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3  # RGB in [-1, 1]
    latent_channels: int = 16  # 16 x (T/4) x (H/4) x (W/4): 12x fewer values than the video (8 kept
    # colour and motion but blurred triangles into circles: an edge moving through a 4x4x4 cell needs more)
    pixel_patch: int = 4  # space-to-depth factor: the whole spatial compression
    channels: tuple[int, int] = (64, 96)  # widths at (T/2, H/4) and (T/4, H/4); CPU-sized
    kernel: int = 3  # 3x3x3: one latent frame of past context per conv


LOGVAR_INIT = -8.0


def _pad_causal(x: torch.Tensor, time_pad: int, space_pad: int) -> torch.Tensor:
    # Past frames are replicates of the first one, so frame 0 is encoded as if the clip had been still.
    x = F.pad(x, (space_pad, space_pad, space_pad, space_pad, 0, 0), mode="constant")
    if time_pad:
        x = torch.cat([x[:, :, :1].expand(-1, -1, time_pad, -1, -1), x], dim=2)
    return x


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads only the past in time; with a temporal stride s, output frame j sees input
    frames up to s*j + s - 1 (the end of its own chunk) and never later ones."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        self.time_pad = kernel - stride[0]
        self.space_pad = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_causal(x, self.time_pad, self.space_pad))


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels of each voxel (as Wan's VAE): GroupNorm would mix frames and break causality."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResBlock(nn.Module):
    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(dim)
        self.conv1 = CausalConv3d(dim, dim, kernel)
        self.norm2 = ChannelRMSNorm(dim)
        self.conv2 = CausalConv3d(dim, dim, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


def _depth_to_time_space(x: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """(B, C*t*s*s, T, H, W) -> (B, C, T*t, H*s, W*s); each input voxel fills its own output block."""
    b, c, tt, h, w = x.shape
    c_out = c // (t * s * s)
    x = x.view(b, c_out, t, s, s, tt, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, T, t, H, s, W, s)
    return x.reshape(b, c_out, tt * t, h * s, w * s)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        p, k = cfg.pixel_patch, cfg.kernel
        self.conv_in = CausalConv3d(cfg.in_channels * p * p, c1, k, stride=(2, 1, 1))
        self.res1 = ResBlock(c1, k)
        self.down_time = CausalConv3d(c1, c2, k, stride=(2, 1, 1))
        self.res2 = ResBlock(c2, k)
        self.norm_out = ChannelRMSNorm(c2)
        self.conv_out = CausalConv3d(c2, 2 * cfg.latent_channels, k)
        self.pixel_patch = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, T, H, W)
        b, c, t, h, w = x.shape
        p = self.pixel_patch
        x = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, 3, H, W)
        x = F.pixel_unshuffle(x, p)  # (B*T, 48, H/4, W/4)
        x = x.view(b, t, c * p * p, h // p, w // p).transpose(1, 2)  # (B, 48, T, H/4, W/4)
        x = self.res1(self.conv_in(x))  # (B, c1, T/2, H/4, W/4)
        x = self.res2(self.down_time(x))  # (B, c2, T/4, H/4, W/4)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, 2*Z, T/4, H/4, W/4)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        p, k = cfg.pixel_patch, cfg.kernel
        self.conv_in = CausalConv3d(cfg.latent_channels, c2, k)
        self.res2 = ResBlock(c2, k)
        self.up_time = nn.Conv3d(c2, c1 * 2, 1)  # pointwise, then depth-to-time: no overlap, so causal
        self.res1 = ResBlock(c1, k)
        self.norm_out = ChannelRMSNorm(c1)
        self.conv_out = CausalConv3d(c1, 2 * cfg.in_channels * p * p, k)  # both frames of each pair
        self.pixel_patch = p

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (B, Z, T/4, H/4, W/4)
        x = self.res2(self.conv_in(z))  # (B, c2, T/4, H/4, W/4)
        x = _depth_to_time_space(self.up_time(x), t=2, s=1)  # (B, c1, T/2, H/4, W/4)
        x = self.res1(x)  # (B, c1, T/2, H/4, W/4)
        x = self.conv_out(F.silu(self.norm_out(x)))  # (B, 2*48, T/2, H/4, W/4)
        return _depth_to_time_space(x, t=2, s=self.pixel_patch)  # (B, 3, T, H, W)


class VideoVAE(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] <-> latent (B, Z, T/4, H/4, W/4); T and H, W multiples of 4."""

    temporal_factor = 4
    spatial_factor = 4

    def __init__(self, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # The posterior starts nearly deterministic (std e^-4) rather than feeding the decoder unit noise
        # over a near-zero mean; the KL term still bounds how far the variance shrinks. (No difference in
        # loss was measured against logvar 0 over the first 75 steps; it is a safe start, not a speed-up.)
        nn.init.constant_(self.encoder.conv_out.bias[config.latent_channels :], LOGVAR_INIT)
        # Per-channel latent statistics, measured on the training set after the VAE is trained, so the
        # DiT sees unit-variance latents (as Wan's VAE mean/std); identity until a checkpoint sets them.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(Z, T/4, H/4, W/4) for a video of that size."""
        t, s = self.temporal_factor, self.spatial_factor
        if num_frames % t or height % s or width % s:
            raise ValueError(f"frames must be a multiple of {t} and height/width of {s}")
        return (self.config.latent_channels, num_frames // t, height // s, width // s)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 3, T, H, W) -> posterior (mean, logvar), each (B, Z, T/4, H/4, W/4)."""
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent (B, Z, T/4, H/4, W/4) -> video (B, 3, T, H, W), roughly in [-1, 1]."""
        return self.decoder(z)

    def forward(
        self, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, mean, logvar) with a reparameterized posterior sample."""
        mean, logvar = self.encode(video)
        # Drawn where the generator lives (the CPU in training), so a seed gives the same noise on any device.
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return self.decode(mean + noise * (0.5 * logvar).exp()), mean, logvar

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latent -> the unit-variance space the DiT is trained in."""
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)


def VAE_Mini(**kw: object) -> VideoVAE:
    return VideoVAE(VAEConfig(**kw))  # type: ignore[arg-type]
