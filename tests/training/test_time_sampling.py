"""The teacher's training-time distributions: what `t_sampling` names is what the loss sees."""

from __future__ import annotations

import pytest
import torch

from reelforge.engine.sampler import flow_timesteps, shift_time
from reelforge.training import cli
from reelforge.training.train_dit import T_SAMPLINGS, sample_t


def _draw(how: str, shift: float = 3.0, n: int = 40_000, seed: int = 0) -> torch.Tensor:
    return sample_t(n, how, torch.Generator().manual_seed(seed), shift)


def test_uniform_is_the_generators_own_draw_so_earlier_teachers_retrain_bit_for_bit() -> None:
    expected = torch.rand(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(sample_t(64, "uniform", torch.Generator().manual_seed(5)), expected)


@pytest.mark.parametrize("shift", [2.0, 3.0])
def test_shifted_draws_follow_the_samplers_time_shift(shift: float) -> None:
    t = _draw("shifted", shift)
    assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        # A monotone map moves each quantile of u to its image: u's q-quantile is q.
        expected = float(shift_time(torch.tensor(q, dtype=torch.float64), shift))
        assert float(torch.quantile(t, q)) == pytest.approx(expected, abs=0.01)
    # The shift puts more of training at high noise than uniform t does: P(t > 0.9) = 1 - 0.9 / (s - 0.9 (s - 1)).
    assert float((t > 0.9).float().mean()) == pytest.approx(1 - 0.9 / (shift - 0.9 * (shift - 1)), abs=0.01)
    assert float((_draw("uniform") > 0.9).float().mean()) == pytest.approx(0.1, abs=0.01)


def test_shifted_times_are_the_ones_the_shifted_sampler_visits() -> None:
    grid = torch.linspace(1.0, 0.0, 9, dtype=torch.float64)
    assert torch.allclose(shift_time(grid, 3.0).float(), flow_timesteps(8, 3.0))
    assert torch.equal(shift_time(grid, 1.0), grid)


def test_draws_are_fixed_by_the_seed() -> None:
    assert torch.equal(_draw("shifted", seed=9, n=32), _draw("shifted", seed=9, n=32))
    assert not torch.equal(_draw("shifted", seed=9, n=32), _draw("shifted", seed=10, n=32))


def test_an_unknown_distribution_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="uniform, logit_normal, shifted"):
        _draw("cosine")


def test_the_cli_offers_exactly_the_trainers_distributions() -> None:
    assert cli.T_SAMPLINGS == T_SAMPLINGS
