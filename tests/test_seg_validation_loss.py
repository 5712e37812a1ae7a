"""train_seg.py's validation loss is the mean over every labelled pixel of the val set (issue 21, item 16).

Batches of different sizes and with different numbers of ignored pixels must not change it: it is not a
mean of per-batch means.
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import train_seg
from salfmix_transforms import engine
from salfmix_transforms.segmentation import confusion_matrix, segmentation_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K, IGNORE = 3, 255


def _val_set() -> TensorDataset:
    """5 images of 6x6 (batches 2, 2, 1 at batch size 2); image i has 6 * i ignored pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 6, 6, generator=g)
    y = torch.randint(0, K, (5, 6, 6), generator=g)
    for i in range(5):
        y[i].view(-1)[: 6 * i] = IGNORE
    return TensorDataset(x, y)


def test_the_validation_loss_is_the_per_pixel_mean_over_the_whole_set():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, K, 1)
    data = _val_set()
    run = engine.Run(
        args=argparse.Namespace(distributed=False),
        device=torch.device("cpu"),
        num_classes=K,
        val_loader=DataLoader(data, batch_size=2, shuffle=False),
    )
    result = train_seg.validate(run, model, epoch=0)
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)
    expected = float(F.cross_entropy(logits, y, ignore_index=IGNORE))  # mean over the labelled pixels
    batches = [(logits[i : i + 2], y[i : i + 2]) for i in (0, 2, 4)]
    batch_means = [float(F.cross_entropy(lg, t, ignore_index=IGNORE)) for lg, t in batches]
    assert abs(sum(batch_means) / 3 - expected) > 1e-3  # the set tells a mean of batch means apart
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    metrics = segmentation_metrics(confusion_matrix(logits.argmax(1), y, K, IGNORE))
    assert result["miou"] == pytest.approx(metrics["miou"]) and result["pixel_acc"] == pytest.approx(
        metrics["pixel_acc"]
    )
