"""``--bn_statistics recomputed``: BatchNorm's statistics measured afresh on fixed clips
with the current weights (the running averages trail the weights; on a set of a few dozen
clips at a high learning rate the model they describe predicted one class)."""

import torch
import torch.nn as nn

from trainer import recompute_batchnorm
from utils.runtime import Forward


def test_the_statistics_are_the_average_over_the_pass_of_the_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.ReLU(), nn.BatchNorm2d(3))
    batches = [torch.randn(4, 1, 8, 8) * (1 + i) + i for i in range(3)]
    model.train()
    for batch in batches:                          # running averages of earlier weights
        model(batch)
    with torch.no_grad():
        model[0].weight.mul_(3.0)                  # the weights move on
    first = model[1]
    momentum_before = first.momentum
    recompute_batchnorm(model, [(b, {}) for b in batches], Forward())
    with torch.no_grad():
        outputs = [model[0](b) for b in batches]
    means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    variances = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outputs]).mean(dim=0)
    torch.testing.assert_close(first.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.running_var, variances, rtol=1e-5, atol=1e-6)
    assert first.momentum == momentum_before and not first.training and not model.training
    model.eval()
    repeated = [(b, {}) for b in batches]
    second_mean = model[4].running_mean.clone()
    recompute_batchnorm(model, repeated, Forward())             # the same weights and clips: the same numbers
    torch.testing.assert_close(model[4].running_mean, second_mean, rtol=0, atol=0)


def test_nothing_changes_without_a_loader_or_batchnorm():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recompute_batchnorm(model, None, Forward())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    plain = nn.Sequential(nn.Conv2d(1, 3, 3), nn.LayerNorm([6, 6]))
    recompute_batchnorm(plain, [(torch.randn(2, 1, 8, 8), {})], Forward())       # no BatchNorm: nothing to do
