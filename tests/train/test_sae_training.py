"""Toy superposition data, the TopK SAE / vSAE modules, their training loop and evaluation."""

from __future__ import annotations

import pytest
import torch

from divergent.train.sparse_autoencoder import (
    TopKSAE,
    VariationalTopKSAE,
    evaluate_sparse_autoencoder,
    superposition_data,
    train_sparse_autoencoder,
)


def test_superposition_data_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    d = superposition_data(20_000, n_features=16, dim=8, p_active=0.1, generator=g)
    assert d.x.shape == (20_000, 8) and d.activations.shape == (20_000, 16)
    torch.testing.assert_close(d.directions.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(d.x, d.activations @ d.directions)
    on = d.activations > 0
    assert abs(float(on.float().mean()) - 0.1) < 0.005
    assert abs(float(d.activations[on].mean()) - 0.5) < 0.01  # U[0, 1] magnitudes
    again = superposition_data(5, n_features=16, dim=8, directions=d.directions, generator=g)
    assert torch.equal(again.directions, d.directions)
    with pytest.raises(ValueError, match="`p_active`"):
        superposition_data(5, p_active=1.5)
    with pytest.raises(ValueError, match="`directions`"):
        superposition_data(5, n_features=4, dim=3, directions=torch.eye(3))


def test_shared_initialisation_and_modes() -> None:
    sae = TopKSAE(6, 10, 2, generator=torch.Generator().manual_seed(1))
    vsae = VariationalTopKSAE(6, 10, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sae.decoder, vsae.decoder) and torch.equal(sae.encoder, sae.decoder)
    x = torch.randn(4, 6)
    vsae.eval()
    out = vsae(x)
    torch.testing.assert_close(out.mu, sae(x).mu)  # eval: z = μ, the SAE's pre-activation
    torch.testing.assert_close(out.x_hat, sae(x).x_hat)
    vsae.train()
    noisy = vsae(x, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(noisy.x_hat, out.x_hat)
    assert ((noisy.codes != 0).sum(-1) <= 2).all()
    fixed = VariationalTopKSAE(6, 10, 2, learn_sigma=False, log_var_init=-1.0)
    assert fixed(x).log_var == -1.0


def test_training_lowers_the_error_and_keeps_unit_decoder_rows() -> None:
    g = torch.Generator().manual_seed(3)
    data = superposition_data(2048, n_features=16, dim=8, p_active=0.1, generator=g)
    for model in (
        TopKSAE(8, 24, 2, generator=torch.Generator().manual_seed(4)),
        VariationalTopKSAE(8, 24, 2, generator=torch.Generator().manual_seed(4)),
    ):
        before = evaluate_sparse_autoencoder(model, data.x, data.directions)
        losses = train_sparse_autoencoder(
            model, data.x, steps=60, batch_size=64, lr=3e-3, kl_weight=0.01, generator=g
        )
        after = evaluate_sparse_autoencoder(model, data.x, data.directions, generator=g)
        assert len(losses) == 60 and not model.training
        assert sum(losses[-10:]) < sum(losses[:10])
        if not isinstance(model, VariationalTopKSAE):
            # (the vSAE's posterior-mean error need not fall: its decoder learns noisy codes)
            assert after.mse < before.mse
        else:
            assert after.fvu_sampled != after.fvu
        torch.testing.assert_close(model.decoder.norm(dim=1), torch.ones(24))
        assert 0.0 <= after.dead_fraction <= 1.0 and after.l0 <= 2.0
