"""models/dropout.py: the mask from 16-bit uniforms drops with probability p, keeps the mean
exactly, follows torch's seed, passes the gradient through the same mask, and is the input
itself when off."""

import pytest
import torch

from muppets.models.dropout import Dropout, dropout

pytestmark = pytest.mark.usefixtures("one_thread")


def test_off_is_the_input_itself():
    x = torch.randn(5, 3)
    assert dropout(x, 0.0, training=True) is x
    assert dropout(x, 0.3, training=False) is x
    module = Dropout(0.3).eval()
    assert module(x) is x


def test_drops_with_probability_p_and_scales_the_rest_exactly():
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # an odd size: the last 64-bit draw is partly used
    y = dropout(x, 0.1, training=True)
    assert y.shape == x.shape and y.dtype == x.dtype
    scale = 65536 / (65536 - 6554)  # p = 0.1 -> 6554 of the 2^16 levels dropped
    values = y.unique()
    assert values[0] == 0.0 and values[1:].tolist() == [pytest.approx(scale, rel=1e-7)]
    assert abs(float((y == 0).float().mean()) - 6554 / 65536) < 1.5e-3  # 5 sigma at 1M
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1, training=True), y)  # the seed decides the mask


def test_gradient_is_the_same_mask_and_dtype_is_kept():
    torch.manual_seed(1)
    x = torch.randn(4, 6, 7).transpose(0, 1).requires_grad_()  # not contiguous
    y = Dropout(0.5).train()(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * 2.0)
    assert torch.equal(x.grad, kept.float() * 2.0)
    half = dropout(torch.ones(64, dtype=torch.bfloat16), 0.5, training=True)
    assert half.dtype == torch.bfloat16 and set(half.unique().tolist()) <= {0.0, 2.0}


def test_found_and_set_as_an_nn_dropout():
    from torch import nn

    from muppets.recipes.finetune.encoder import set_dropout

    model = nn.Sequential(Dropout(0.1), nn.Linear(2, 2))
    set_dropout(model, 0.0, 0.0)
    x = torch.randn(3, 2)
    assert model[0].p == 0.0 and model[0].train()(x) is x
