"""The data set builders honour the split names they are given (found by a new-user review: ``--dataset
digits --val-split train`` scored the validation images under the training split's name)."""

from __future__ import annotations

import pytest

from salfmix_transforms.data import DatasetError, build_datasets


def test_digits_scores_the_split_it_is_asked_for():
    train, val, _, _ = build_datasets("digits")
    assert len(val) < len(train)
    _, val_of_train, _, _ = build_datasets("digits", val_split="train")
    assert len(val_of_train) == len(train)
    for name in ("val", "test", "validation"):
        assert len(build_datasets("digits", val_split=name)[1]) == len(val)


@pytest.mark.parametrize("split", ["foo", "Val"])
def test_digits_refuses_an_unknown_split_by_name(split):
    with pytest.raises(DatasetError, match=f"digits split must be .* got '{split}'"):
        build_datasets("digits", val_split=split)
