"""VideoVAE: compression factors and causality in time, both ways."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.vae import VAE_Mini, VideoVAE


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    return VAE_Mini().eval()


def test_shapes(vae: VideoVAE) -> None:
    video = torch.rand(1, 3, 16, 64, 32) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(video)
        assert mean.shape == logvar.shape == (1, 16, 4, 16, 8)
        assert vae.latent_shape(16, 64, 32) == (16, 4, 16, 8)
        recon = vae.decode(mean)
        assert recon.shape == video.shape
        recon, mean, logvar = vae(video, generator=torch.Generator().manual_seed(0))
        assert recon.shape == video.shape and torch.isfinite(recon).all()


def test_encoder_is_causal(vae: VideoVAE) -> None:
    video = torch.randn(1, 3, 16, 32, 32)
    changed = video.clone()
    changed[:, :, 9] += 1.0  # frame 9 belongs to latent frame 2 (frames 8..11)
    with torch.no_grad():
        before, _ = vae.encode(video)
        after, _ = vae.encode(changed)
    torch.testing.assert_close(after[:, :, :2], before[:, :, :2], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, 2], before[:, :, 2])


def test_decoder_is_causal(vae: VideoVAE) -> None:
    z = torch.randn(1, 16, 4, 8, 8)
    changed = z.clone()
    changed[:, :, 2] += 1.0  # latent frame 2 decodes to frames 8..11
    with torch.no_grad():
        before, after = vae.decode(z), vae.decode(changed)
    torch.testing.assert_close(after[:, :, :8], before[:, :, :8], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, 8], before[:, :, 8])


def test_frame_count_must_be_a_multiple_of_four(vae: VideoVAE) -> None:
    with pytest.raises(ValueError):
        vae.latent_shape(18, 64, 64)
