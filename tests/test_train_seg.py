"""train_seg.py and salfmix_transforms.segmentation (issue 15): data sets, metrics, runs, resume, errors.

Every run is tiny (a few dozen 64x64 synthetic images, one or two epochs, two threads).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import pytest
import torch
from _train_helpers import read_summary
from PIL import Image

import train_seg
from salfmix_transforms import engine
from salfmix_transforms.data import DatasetError
from salfmix_transforms.segmentation import (
    MEAN,
    STD,
    SegmentationFolder,
    SyntheticShapes,
    build_model,
    confusion_matrix,
    joint_transform,
    segmentation_metrics,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID = next(
    (
        p
        for p in ("/work/shared/data/camvid", os.path.join(REPO, "..", "shared", "data", "camvid"))
        if os.path.isfile(os.path.join(p, "train.txt"))
    ),
    None,
)
TINY = ["--limit-train", "16", "--limit-val", "8", "-b", "8", "--threads", "2", "--no-progress"]


# -- data sets -----------------------------------------------------------------------------------------------


def _write_folder(root, sizes=((16, 20), (16, 20)), classes=("a", "b", "Unlabelled"), drop_mask=None):
    """A <root>/train/images|masks folder: image i is 10 * i in every channel, its mask has class i % 2
    everywhere except a hot pixel (class 1 - i % 2) at (2, 3) and an Unlabelled (index 2) pixel at (0, 0)."""
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, split, "images"))
        os.makedirs(os.path.join(root, split, "masks"))
        for i, (h, w) in enumerate(sizes):
            name = f"img{i}.png"
            image = torch.full((h, w, 3), 10 * i, dtype=torch.uint8)
            image[2, 3] = 255
            mask = torch.full((h, w), i % 2, dtype=torch.uint8)
            mask[2, 3] = 1 - i % 2
            mask[0, 0] = 2
            Image.fromarray(image.numpy()).save(os.path.join(root, split, "images", name))
            if name != drop_mask:
                Image.fromarray(mask.numpy()).save(os.path.join(root, split, "masks", name))
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.writelines(f"{i} {c}\n" for i, c in enumerate(classes))


def test_folder_pairs_images_and_masks_and_ignores_unlabelled(tmp_path):
    _write_folder(tmp_path)
    ds = SegmentationFolder(str(tmp_path), "val")
    assert ds.classes == ["a", "b"] and ds.num_classes == 2 and len(ds) == 2
    for i in range(2):
        image, mask = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 16, 24)  # padded to multiples of 8
        assert mask.dtype == torch.long and mask.shape == (16, 24)
        raw = torch.tensor(10.0 * i / 255)
        torch.testing.assert_close(image[:, 5, 5], (raw - torch.tensor(MEAN)) / torch.tensor(STD))
        assert mask[5, 5] == i % 2 and mask[2, 3] == 1 - i % 2, "image i goes with mask i"
        assert mask[0, 0] == 255, "the Unlabelled class becomes ignore_index"
        assert (mask[:, 20:] == 255).all() and (image[:, :, 20:] != 0).all(), "padding: ignored pixels"


def test_training_transform_moves_the_mask_with_the_image():
    """A hot pixel: wherever crop and flip put the image's white pixel, the mask's class goes with it."""
    from torchvision import tv_tensors

    transform = joint_transform(True, (16, 16))
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image = torch.zeros(3, 16, 20, dtype=torch.uint8)
        mask = torch.zeros(16, 20, dtype=torch.long)
        image[:, 5, 17], mask[5, 17] = 255, 3
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        hot = out_image[0] > 0  # the white pixel (black normalises below 0)
        assert out_image.dtype == torch.float32 and out_mask.shape == (16, 16)
        assert torch.equal(hot, out_mask == 3) and int(hot.sum()) in (0, 1)
        if hot.any():
            col = int(hot.nonzero()[0, 1])
            flips.add(col < 8)  # the pixel is right of centre unless flipped
    assert flips == {True, False}, "both flipped and unflipped crops seen"


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        SegmentationFolder(str(tmp_path / "missing"), "train")
    _write_folder(tmp_path / "a", drop_mask="img1.png")
    with pytest.raises(DatasetError, match="has no mask"):
        SegmentationFolder(str(tmp_path / "a"), "train")
    _write_folder(tmp_path / "b")
    Image.new("L", (5, 5)).save(tmp_path / "b" / "train" / "masks" / "img0.png")
    with pytest.raises(DatasetError, match="mask") as info:
        SegmentationFolder(str(tmp_path / "b"), "train")[0]
    assert "\n" not in str(info.value)


def test_synthetic_scenes_are_reproducible_and_labelled():
    a, b = SyntheticShapes("val", limit=6), SyntheticShapes("val", limit=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, SyntheticShapes("train", limit=6).images)
    values = set(a.masks.unique().tolist())
    assert {0, 255} <= values <= {0, 1, 2, 3, 255} and len(values) >= 3
    image, mask = a[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.long


@pytest.mark.parametrize("name", ["tinyseg", "lraspp_mobilenet_v3_large"])
def test_models_return_logits_at_the_input_size(name):
    from salfmix_transforms.segmentation import logits_of

    model = build_model(name, 5).eval()
    with torch.no_grad():
        out = logits_of(model(torch.randn(2, 3, 64, 64)))
    assert out.shape == (2, 5, 64, 64)


# -- metrics -------------------------------------------------------------------------------------------------


def test_metrics_perfect_prediction():
    target = torch.tensor([[0, 1], [2, 2]])
    m = segmentation_metrics(confusion_matrix(target, target, 4))
    assert m["miou"] == 1.0 and m["pixel_acc"] == 1.0
    assert math.isnan(m["iou"][3]), "a class in neither target nor prediction is left out of the mean"


def test_metrics_one_class_wrong():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])  # one class-1 pixel predicted as 0
    cm = confusion_matrix(pred, target, 2)
    assert cm.tolist() == [[2, 0], [1, 1]]
    m = segmentation_metrics(cm)
    # IoU(0) = 2 / (2 + 1), IoU(1) = 1 / (1 + 1)
    assert m["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2) and m["pixel_acc"] == pytest.approx(3 / 4)


def test_metrics_exclude_ignored_pixels():
    target = torch.tensor([0, 1, 255, 255])
    pred = torch.tensor([0, 1, 1, 0])
    cm = confusion_matrix(pred, target, 2, ignore_index=255)
    assert int(cm.sum()) == 2
    m = segmentation_metrics(cm)
    assert m["miou"] == 1.0 and m["pixel_acc"] == 1.0


# -- runs ----------------------------------------------------------------------------------------------------


def _run(tmp_path, *flags: str, name: str = "run") -> tuple[int, str]:
    rc = train_seg.main([*flags, *TINY, "--output", str(tmp_path), "--experiment", name])
    return rc, str(tmp_path / name)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "salfmix", "hybridmix-v3"])
def test_one_epoch_on_the_synthetic_default(tmp_path, method):
    flags = ["--method", method, "--epochs", "1"]
    if method != "baseline":
        flags += ["--salfmix-warmup-epochs", "0"]  # SalfMix really runs in the one epoch
    rc, folder = _run(tmp_path, *flags)
    assert rc == 0
    rows = read_summary(folder)
    assert len(rows) == 1 and rows[0]["epoch"] == "0"
    for key in ("train_loss", "eval_loss", "eval_miou", "eval_pixel_acc", "lr", "train_epoch_time"):
        assert math.isfinite(float(rows[0][key])), key
    assert 0 <= float(rows[0]["eval_miou"]) <= 1
    aug = float(rows[0]["train_aug_time"])
    assert aug == 0 if method == "baseline" else aug > 0
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    assert results["method"] == method and results["dataset"] == "synthetic" and results["best_epoch"] == 0
    assert results["best_miou"] == pytest.approx(float(rows[0]["eval_miou"]))
    assert os.path.isabs(results["output_dir"]) and results["num_classes"] == 4
    if method != "baseline":
        assert "warmup_epochs=0" in results["transform"]
    assert os.path.isfile(os.path.join(folder, "model_best.pth.tar"))


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(tmp_path):
    rc, folder = _run(tmp_path, "--method", "salfmix", "--epochs", "1")
    assert rc == 0
    # The run's flags (--method salfmix) come from the checkpoint; --epochs 2 is the new total.
    rc = train_seg.main(["--resume", folder, "--epochs", "2", "--no-progress", "--threads", "2"])
    assert rc == 0
    rows = read_summary(folder)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    assert results["start_epoch"] == 1 and results["epochs"] == 2
    assert results["best_epoch"] in (0, 1)
    ckpt = torch.load(os.path.join(folder, "last.pth.tar"), map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1
    # Nothing left to train: exit code 0, results kept.
    assert _run(tmp_path, "--method", "salfmix", "--epochs", "2", "--resume", folder)[0] == 0
    # Another method or model than the checkpoint's: a one-line error.
    assert _run(tmp_path, "--method", "cutmix", "--epochs", "3", "--resume", folder)[0] == 2
    assert train_seg.main(["--resume", folder, "--model", "lraspp_mobilenet_v3_large", "--epochs", "3"]) == 2
    with open(os.path.join(folder, "args.json")) as f:
        assert json.load(f)["method"] == "salfmix"


@pytest.mark.slow
@pytest.mark.skipif(CAMVID is None, reason="CamVid is not in ../shared/data/camvid")
def test_one_epoch_on_a_camvid_subset(tmp_path):
    rc, folder = _run(
        tmp_path, "--dataset", "camvid", "--data-dir", CAMVID, "--method", "cutmix", "--epochs", "1"
    )
    assert rc == 0
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    assert results["num_classes"] == 11 and "Unlabelled" not in results["classes"]
    assert results["crop_size"] == [128, 168] and results["train_size"] == 16 and results["val_size"] == 8
    assert 0 <= results["best_miou"] <= 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data-dir", "/nonexistent/camvid"], "does not exist"),
        (["--method", "nosuchmethod"], "invalid choice"),
        (
            ["--method", "salfmix", "--salfmix-grid", "0"],
            "argument --salfmix-grid: must be an int >= 1, got 0",
        ),
        (["--method", "salfmix", "--salfmix-grid", "200"], "--salfmix-grid 200 does not fit 64x64 crops"),
        (["--method", "cutmix", "--mixup", "1"], "--method cutmix, but with --mixup 1.0"),
        (["--cutout", "--salfmix"], "choose one single-image method"),
        (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, flags, message):
    rc, folder = _run(tmp_path, *flags)
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert err.startswith("train_seg.py: error:") and err.count("\n") == 1
    assert not os.path.exists(folder), "nothing written"


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Model, optimizer, lr schedule and RNG state come back: epoch 1 resumed from checkpoint-0 is bit for bit
    epoch 1 of the run that went on (HybridMix v3: crops, flips, SalfMix cells and CutMix boxes)."""
    flags = ["--method", "hybridmix-v3", "--salfmix-warmup-epochs", "0", "--epochs", "2"]
    assert _run(tmp_path, *flags, name="whole")[0] == 0
    checkpoint = str(tmp_path / "whole" / "checkpoint-0.pth.tar")
    rc, folder = _run(tmp_path, *flags, "--resume", checkpoint, name="resumed")
    assert rc == 0
    whole, resumed = read_summary(str(tmp_path / "whole")), read_summary(folder)
    assert [r["epoch"] for r in resumed] == ["1"]
    for key in ("train_loss", "eval_loss", "eval_miou", "eval_pixel_acc", "lr"):
        assert resumed[0][key] == whole[1][key], key


# -- DDP -----------------------------------------------------------------------------------------------------


def _torchrun(tmp_path, name: str, *flags: str) -> str:
    """``train_seg.py`` in two gloo processes (one thread each) on the synthetic scenes; the run folder."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    cmd += [os.path.join(REPO, "train_seg.py"), *flags, "--device", "cpu", "--threads", "1", "--no-progress"]
    cmd += [
        "--limit-train",
        "16",
        "--limit-val",
        "7",
        "-b",
        "4",
        "--output",
        str(tmp_path),
        "--experiment",
        name,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(tmp_path / name)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_count_every_val_pixel_once(tmp_path):
    """Two gloo ranks train SalfMix on disjoint shards; the val confusion matrix is summed over the ranks,
    so the logged mIoU and pixel accuracy are those of one process evaluating the saved model on every val
    image once (7 images: an uneven split that a padding sampler would count twice)."""
    from salfmix_transforms.segmentation import logits_of

    folder = _torchrun(
        tmp_path, "ddp", "--method", "salfmix", "--salfmix-warmup-epochs", "0", "--epochs", "1"
    )
    rows = read_summary(folder)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"]))
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    assert results["world_size"] == 2 and results["train_size"] == 16 and results["val_size"] == 7
    ckpt = torch.load(os.path.join(folder, "last.pth.tar"), map_location="cpu", weights_only=False)
    assert len(ckpt["train_state"]["rng"]) == 2, "every rank's RNG state, for an exact resume"
    assert not any(k.startswith("module.") for k in ckpt["state_dict"]), "saved unwrapped"

    model = build_model("tinyseg", 4)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    cm = torch.zeros(4, 4, dtype=torch.long)
    with torch.no_grad():
        for image, mask in SyntheticShapes("val", limit=7, seed=0):
            cm += confusion_matrix(logits_of(model(image[None])).argmax(1), mask[None], 4)
    expected = segmentation_metrics(cm)
    assert float(rows[0]["eval_miou"]) == pytest.approx(expected["miou"], abs=1e-4)
    assert float(rows[0]["eval_pixel_acc"]) == pytest.approx(expected["pixel_acc"], abs=1e-4)


@pytest.mark.slow
def test_torchrun_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Two ranks, HybridMix v3: epoch 1 resumed from checkpoint-0 is the uninterrupted run's epoch 1 (each
    rank gets its own RNG state back; the samplers follow the epoch)."""
    flags = ["--method", "hybridmix-v3", "--salfmix-warmup-epochs", "0", "--epochs", "2"]
    whole = _torchrun(tmp_path, "whole", *flags)
    checkpoint = os.path.join(whole, "checkpoint-0.pth.tar")
    resumed = _torchrun(tmp_path, "resumed", *flags, "--resume", checkpoint)
    assert [r["epoch"] for r in read_summary(resumed)] == ["1"]
    for key in ("train_loss", "eval_loss", "eval_miou", "eval_pixel_acc", "lr"):
        assert read_summary(resumed)[0][key] == read_summary(whole)[1][key], key


# -- the augmentation flags of train_timm.py ------------------------------------------------------------


def _transform(*flags: str):
    args = train_seg.parse_args(list(flags))
    return args, train_seg.build_transform(args, 4, build_model("tinyseg", 4))


def test_augmentation_flags_are_train_timms():
    """--hybrid, --salfmix-*, --mixup, ... build what --method builds, for class masks (ignore_index 255)."""
    _, by_flags = _transform("--salfmix", "--hybrid", "cutmix")
    _, by_name = _transform("--method", "hybridmix-v3")
    assert repr(by_flags) == repr(by_name) and by_name.ignore_index == 255
    args, mixup = _transform("--mixup", "0.4", "--smoothing", "0.1", "--mixup-mode", "elem")
    assert train_seg.method_name(args) == "mixup"
    assert (mixup.mixup_alpha, mixup.label_smoothing, mixup.mode) == (0.4, 0.1, "elem")
    args, salfmix = _transform("--salfmix-grid", "8", "--salfmix-prob", "0.5", "--salfmix-warmup-epochs", "0")
    assert train_seg.method_name(args) == "salfmix", "no augmentation flag: the default method, SalfMix"
    assert (salfmix.grid, salfmix.prob, salfmix.warmup_epochs) == (8, 0.5, 0)
    assert _transform("--method", "baseline")[1] is None


def test_pasting_methods_train_on_class_masks_with_plain_cross_entropy():
    """Issue 22: a transform that only moves pixels gets ``num_classes=None`` and returns class masks, so the
    loss is cross-entropy with ``ignore_index`` and ``--smoothing``, equal to the soft dense loss of the
    smoothed one-hot targets; a blending one (Mixup in HybridMix v1) still returns soft dense targets."""
    from types import SimpleNamespace

    from salfmix_transforms.targets import dense_one_hot

    for method in ("salfmix", "cutout", "cutmix", "hybridmix-v3", "resizemix"):
        _, transform = _transform("--method", method, "--smoothing", "0.1")
        assert transform.num_classes is None and transform.label_smoothing == 0.0, method
    _, blending = _transform("--method", "hybridmix-v1", "--smoothing", "0.1")
    assert blending.num_classes == 4 and blending.label_smoothing == 0.1

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, generator=generator)
    mask = torch.randint(0, 4, (2, 6, 5), generator=generator)
    mask[0, 0, :3] = 255
    run = SimpleNamespace(transform=blending, args=SimpleNamespace(smoothing=0.1))
    hard = train_seg.segmentation_loss(run, logits, mask)
    soft = train_seg.segmentation_loss(run, logits, dense_one_hot(mask, 4, 0.1, 255))
    torch.testing.assert_close(hard, soft)
    torch.testing.assert_close(soft, train_seg.dense_soft_loss(logits, dense_one_hot(mask, 4, 0.1, 255)))
    # The run record says where --smoothing went (the class-mask transform's repr shows label_smoothing=0).
    _, cutmix = _transform("--method", "cutmix", "--smoothing", "0.1")
    record = SimpleNamespace(transform=cutmix, args=SimpleNamespace(smoothing=0.1))
    assert train_seg._targets(record) == "class masks, cross-entropy with --smoothing 0.1"
    assert train_seg._targets(run).startswith("soft dense targets (label smoothing 0.1")


@pytest.mark.slow
def test_mixup_off_epoch_and_unused_flags(tmp_path, caplog):
    flags = ["--method", "hybridmix-v1", "--salfmix-warmup-epochs", "0", "--mixup-off-epoch", "1"]
    args = train_seg.parse_args(
        [*flags, "--cutout-ratio", "0.3", *TINY, "--epochs", "2", "--output", str(tmp_path)]
    )
    run = engine.setup(train_seg.TASK, args)
    with caplog.at_level("WARNING"):
        engine.train(run)
    assert "--cutout-ratio given, but the hybridmix-v1 run does not use it" in caplog.text
    assert run.transform.mixup_enabled is False, "--mixup-off-epoch 1: no two-image mixing from epoch 1"


@pytest.mark.slow
def test_resume_takes_the_augmentation_flags_of_the_checkpoint(tmp_path):
    """A run trained with flags (no --method) resumes with the same transform; so does a checkpoint of the
    earlier version, whose args had --method alone (its flags come from the method)."""
    rc, folder = _run(tmp_path, "--salfmix", "--mixup", "0.4", "--salfmix-ratio", "0.25", "--epochs", "1")
    assert rc == 0
    rc = train_seg.main(["--resume", folder, "--epochs", "2", "--no-progress", "--threads", "2"])
    assert rc == 0
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    assert results["method"] == "salfmix+mixup" and results["start_epoch"] == 1
    assert "mixup_alpha=0.4" in results["transform"] and "ratio=0.25" in results["transform"]

    rc, folder = _run(tmp_path, "--method", "hybridmix-v3", "--epochs", "1", name="old")
    ckpt = torch.load(os.path.join(folder, "last.pth.tar"), map_location="cpu", weights_only=False)
    old_args = {k: v for k, v in vars(ckpt["args"]).items() if k not in ("salfmix", "hybrid", "cutmix")}
    ckpt["args"] = argparse.Namespace(**old_args)
    os.makedirs(tmp_path / "old-copy")
    torch.save(ckpt, tmp_path / "old-copy" / "last.pth.tar")
    args = train_seg.parse_args(["--resume", str(tmp_path / "old-copy" / "last.pth.tar"), "--epochs", "2"])
    assert train_seg.method_name(args) == "hybridmix-v3" and args.salfmix and args.hybrid == "cutmix"
    assert (
        train_seg.main(["--resume", str(tmp_path / "old-copy" / "last.pth.tar"), "--method", "cutmix"]) == 2
    )


# -- what a new user ran into (review of the DDP version) ----------------------------------------------------


@pytest.mark.slow
def test_resume_of_an_earlier_checkpoint_makes_model_best_that_runs_best(tmp_path):
    """Resuming checkpoint-0 of a run whose best was a later epoch: the later epochs are no longer the run's,
    so model_best.pth.tar must be the resumed run's best (epoch 0 here), not the abandoned epoch's."""
    rc, folder = _run(tmp_path, "--method", "baseline", "--epochs", "3")
    assert rc == 0
    with open(os.path.join(folder, "results.json")) as f:
        abandoned_best = json.load(f)["best_epoch"]
    assert abandoned_best != 0, "precondition: the abandoned run's best is a later epoch"
    args = train_seg.parse_args(["--resume", os.path.join(folder, "checkpoint-0.pth.tar"), *TINY])
    run = engine.setup(train_seg.TASK, args)
    assert (run.saver.best_epoch, run.start_epoch) == (0, 1)
    best = torch.load(os.path.join(folder, "model_best.pth.tar"), map_location="cpu", weights_only=False)
    assert best["epoch"] == 0


def _folder_with(tmp_path, n=8):
    root = tmp_path / "data"
    _write_folder(root, sizes=((16, 20),) * n)
    return root


def test_a_bad_mask_found_during_training_is_one_line(tmp_path, capsys):
    root = _folder_with(tmp_path)
    Image.new("L", (20, 24)).save(root / "train" / "masks" / "img3.png")  # not image 0: read mid-epoch
    rc, _ = _run(tmp_path, "--dataset", "folder", "--data-dir", str(root), "--epochs", "1")
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("train_seg.py: error:") and err.count("\n") == 1
    assert "img3.png" in err


def test_a_validation_set_without_labelled_pixels_is_refused(tmp_path, capsys):
    root = _folder_with(tmp_path)
    for name in os.listdir(root / "val" / "masks"):
        Image.new("L", (20, 16), 2).save(root / "val" / "masks" / name)  # all Unlabelled
    rc, _ = _run(tmp_path, "--dataset", "folder", "--data-dir", str(root), "--epochs", "1")
    err = capsys.readouterr().err
    assert rc == 2 and "no labelled pixel" in err and err.count("\n") == 1


def test_num_classes_smaller_than_the_synthetic_data_is_refused(tmp_path, capsys):
    rc, _ = _run(tmp_path, "--num-classes", "2", "--epochs", "1")
    err = capsys.readouterr().err
    assert rc == 2 and "--num-classes 2 is smaller than the data set's 4 classes" in err


def test_an_unwritable_run_folder_is_one_line_before_training(tmp_path, capsys):
    """A new run's existing folder gets a suffix (timm's get_outdir); a resumed run continues in its own,
    and when that cannot be written (args.json is a directory) it stops with one line before training."""
    assert _run(tmp_path, "--method", "baseline", "--epochs", "1")[0] == 0
    os.remove(tmp_path / "run" / "args.json")
    os.makedirs(tmp_path / "run" / "args.json")  # a directory where the run writes a file
    capsys.readouterr()
    rc, folder = _run(tmp_path, "--epochs", "2", "--resume", str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("train_seg.py: error:") and "args.json" in err
    assert len(read_summary(folder)) == 1, "refused before training"


@pytest.mark.slow
def test_torchrun_output_folder_error_is_one_line_on_every_rank(tmp_path):
    """Rank 0 creates the run folder; when it cannot, every rank stops with the same line (no rank trains on
    and dies in a collective)."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    cmd += [os.path.join(REPO, "train_seg.py"), "--device", "cpu", "--threads", "1", "--epochs", "1"]
    cmd += ["--limit-train", "16", "--limit-val", "4", "-b", "4", "--output", str(tmp_path / "afile")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("train_seg.py: error: cannot create the run folder") == 2, proc.stderr[-3000:]
    assert "_sync_buffers" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr


@pytest.mark.slow
def test_resume_keeps_the_number_of_loader_workers(tmp_path):
    """Loader workers draw crops and flips from their own seeds, a single process from the main RNG: a
    resume must keep the run's --workers (from the checkpoint) to reproduce the uninterrupted epoch."""
    flags = ["--method", "baseline", "--epochs", "2", "--workers", "1"]
    assert _run(tmp_path, *flags, name="whole")[0] == 0
    checkpoint = str(tmp_path / "whole" / "checkpoint-0.pth.tar")
    assert train_seg.main(["--resume", checkpoint, "--output", str(tmp_path), "--experiment", "resumed"]) == 0
    whole, resumed = read_summary(str(tmp_path / "whole")), read_summary(str(tmp_path / "resumed"))
    assert [r["epoch"] for r in resumed] == ["1"]
    for key in ("train_loss", "eval_loss", "eval_miou"):
        assert resumed[0][key] == whole[1][key], key


@pytest.mark.slow
def test_resume_takes_the_model_of_the_checkpoint(tmp_path):
    """A run of another model than the default resumes without --model (the checkpoint names it)."""
    flags = ["--method", "baseline", "--model", "lraspp_mobilenet_v3_large", "--epochs", "1"]
    flags += ["--limit-train", "8", "-b", "8"]
    rc, folder = _run(tmp_path, *flags)
    assert rc == 0
    assert train_seg.main(["--resume", folder, "--epochs", "2", "--no-progress", "--threads", "2"]) == 0
    assert [r["epoch"] for r in read_summary(folder)] == ["0", "1"]


@pytest.mark.slow
def test_resume_keeps_list_valued_flags(tmp_path):
    """--cutmix-minmax / --resizemix-scope take two values: they are saved in the checkpoint and come back."""
    rc, folder = _run(tmp_path, "--method", "cutmix", "--cutmix-minmax", "0.3", "0.7", "--epochs", "1")
    assert rc == 0
    assert train_seg.main(["--resume", folder, "--epochs", "2", "--no-progress", "--threads", "2"]) == 0
    with open(os.path.join(folder, "results.json")) as f:
        assert "cutmix_minmax=(0.3, 0.7)" in json.load(f)["transform"]


def test_a_batch_without_labelled_pixels_has_zero_loss_not_nan():
    """Every pixel ignored (an all-Unlabelled crop, -b 1): the loss is 0, as the soft dense loss's, not NaN
    (cross-entropy's mean over no pixel), which would stop the run as diverged (found by review)."""
    from types import SimpleNamespace

    logits = torch.randn(1, 4, 6, 5, requires_grad=True)
    mask = torch.full((1, 6, 5), 255)
    for smoothing in (0.0, 0.1):
        run = SimpleNamespace(transform=None, args=SimpleNamespace(smoothing=smoothing))
        loss = train_seg.segmentation_loss(run, logits, mask)
        assert torch.isfinite(loss) and float(loss.detach()) == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()
