"""mIoU averages the classes with a non-empty union, predicted or present (issue 21, item 16).

A class that the model predicts but the target does not hold has IoU 0 and counts in the mean (otherwise a
model that paints a wrong class everywhere is not punished for it); a class in neither is left out.
"""

from __future__ import annotations

import math

import pytest
import torch

from salfmix_transforms.segmentation import confusion_matrix, segmentation_metrics


def test_a_class_predicted_but_absent_from_the_target_counts_with_iou_0():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])  # class 2 is predicted once, and never in the target
    m = segmentation_metrics(confusion_matrix(pred, target, 4))
    # IoU(0) = 1 / 2, IoU(1) = 2 / 2, IoU(2) = 0 / 1, class 3 in neither (left out)
    assert m["iou"][:3] == pytest.approx([0.5, 1.0, 0.0]) and math.isnan(m["iou"][3])
    assert m["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 4)


def test_a_model_that_predicts_only_absent_classes_scores_0():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    pred = torch.full((2, 4, 4), 1)
    m = segmentation_metrics(confusion_matrix(pred, target, 3))
    assert m["miou"] == 0.0 and m["pixel_acc"] == 0.0


def test_the_confusion_matrix_has_no_data_dependent_shape():
    """Summed on the device during validation: no boolean-mask indexing or bincount sized by the data
    (either would make the host wait for a CUDA device every batch); meta tensors have no data, so such an
    op fails on them."""
    pred = torch.empty(2, 8, 8, dtype=torch.long, device="meta")
    cm = confusion_matrix(pred, torch.empty(2, 8, 8, dtype=torch.long, device="meta"), 5)
    assert cm.shape == (5, 5) and cm.dtype == torch.long


def test_the_confusion_matrix_leaves_out_ignored_and_out_of_range_targets():
    target = torch.tensor([0, 1, 255, -1, 3, 1])
    pred = torch.tensor([0, 2, 1, 1, 1, 9])  # a prediction past the classes counts as the last class
    expected = torch.tensor(
        [[1, 0, 0], [0, 0, 2], [0, 0, 0]]
    )  # (0, 0) once, (1, 2) twice; 255, -1, 3 left out
    assert torch.equal(confusion_matrix(pred, target, 3), expected)
