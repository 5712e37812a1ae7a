"""train_timm.py: flags, method -> transform mapping, presets, short real runs, resume, DDP, bad input."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import assert_one_line_error, read_results, read_summary, run_fails, tiny_args
from PIL import Image

import train_timm
from salfmix_transforms import methods
from salfmix_transforms.cutout import Cutout, SaliencyCutout
from salfmix_transforms.data import DatasetError, build_datasets
from salfmix_transforms.flags import disable_mixing
from salfmix_transforms.fmix import FMix
from salfmix_transforms.hybrid import HybridMix
from salfmix_transforms.mixing import CutMix, Mixup, ResizeMix, SaliencyMix
from salfmix_transforms.salfmix import RandomSelfMix, SalfMix

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_timm.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny runs: see conftest.py


# --- command line -------------------------------------------------------------------------------------

FLAG_CASES = [
    (["--model", "preactresnet50"], "model", "preactresnet50"),
    (["--data-dir", "/data/x"], "data_dir", "/data/x"),
    (["--dataset", "cifar100"], "dataset", "cifar100"),
    (["--train-split", "training"], "train_split", "training"),
    (["--val-split", "test"], "val_split", "test"),
    (["--num-classes", "7"], "num_classes", 7),
    (["--img-size", "64"], "img_size", 64),
    (["-b", "16"], "batch_size", 16),
    (["--batch-size", "16"], "batch_size", 16),
    (["--epochs", "3"], "epochs", 3),
    (["--lr", "0.1"], "lr", 0.1),
    (["--sched", "multistep"], "sched", "multistep"),
    (["--decay-milestones", "10", "20"], "decay_milestones", [10, 20]),
    (["--decay-epochs", "30"], "decay_epochs", 30.0),
    (["--decay-rate", "0.5"], "decay_rate", 0.5),
    (["--warmup-epochs", "2"], "warmup_epochs", 2),
    (["--warmup-lr", "0.001"], "warmup_lr", 0.001),
    (["--min-lr", "1e-5"], "min_lr", 1e-5),
    (["--opt", "adamw"], "opt", "adamw"),
    (["--momentum", "0.8"], "momentum", 0.8),
    (["--weight-decay", "5e-4"], "weight_decay", 5e-4),
    (["--mixup", "0.2"], "mixup", 0.2),
    (["--cutmix", "1.0"], "cutmix", 1.0),
    (["--cutmix-minmax", "0.2", "0.8"], "cutmix_minmax", [0.2, 0.8]),
    (["--mixup-prob", "0.5"], "mixup_prob", 0.5),
    (["--mixup-switch-prob", "0.3"], "mixup_switch_prob", 0.3),
    (["--mixup-mode", "elem"], "mixup_mode", "elem"),
    (["--mixup-off-epoch", "5"], "mixup_off_epoch", 5),
    (["--smoothing", "0.1"], "smoothing", 0.1),
    (["--amp"], "amp", True),
    (["--amp-dtype", "bfloat16"], "amp_dtype", "bfloat16"),
    (["--channels-last"], "channels_last", True),
    (["--torchcompile"], "torchcompile", "inductor"),
    (["--torchcompile", "eager"], "torchcompile", "eager"),
    (["--model-ema"], "model_ema", True),
    (["--model-ema-decay", "0.99"], "model_ema_decay", 0.99),
    (["--drop", "0.2"], "drop", 0.2),
    (["--output", "/out"], "output", "/out"),
    (["--experiment", "exp"], "experiment", "exp"),
    # --resume is read with its checkpoint (engine.parse_args): see test_engine.py and the bad-input cases.
    (["--checkpoint-hist", "3"], "checkpoint_hist", 3),
    (["--seed", "3"], "seed", 3),
    (["--workers", "0"], "workers", 0),
    (["-j", "1"], "workers", 1),
    (["--log-interval", "5"], "log_interval", 5),
    (["--threads", "3"], "threads", 3),
    (["--device", "cpu"], "device", "cpu"),
    (["--salfmix"], "salfmix", True),
    (["--salfmix-prob", "0.5"], "salfmix_prob", 0.5),
    (["--salfmix-grid", "8"], "salfmix_grid", 8),
    (["--salfmix-ratio", "0.25"], "salfmix_ratio", 0.25),
    (["--salfmix-no-pool"], "salfmix_no_pool", True),
    (["--salfmix-warmup-epochs", "1"], "salfmix_warmup_epochs", 1),
    (["--saliency-mode", "eval"], "saliency_mode", "eval"),
    (["--hybrid", "cutmix"], "hybrid", "cutmix"),
    (["--saliencymix", "1.0"], "saliencymix", 1.0),
    (["--resizemix"], "resizemix", True),
    (["--resizemix-scope", "0.2", "0.6"], "resizemix_scope", [0.2, 0.6]),
    (["--cutout"], "cutout", True),
    (["--cutout-ratio", "0.25"], "cutout_ratio", 0.25),
    (["--saliency-cutout"], "saliency_cutout", True),
    (["--random-selfmix"], "random_selfmix", True),
    (["--method", "salfmix"], "method", "salfmix"),
    (["--preset", "cifar"], "preset", "cifar"),
    (["--no-progress"], "no_progress", True),
    (["--width", "0.5"], "width", 0.5),
]


@pytest.mark.parametrize(("argv", "attr", "expected"), FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_every_flag_parses(argv, attr, expected):
    args = train_timm.parse_args(argv)
    assert getattr(args, attr) == expected


def test_defaults_train_salfmix_on_the_embedded_data_set_on_a_small_network():
    # Issue 13, observation 4: without flags a newcomer trained the baseline and never saw SalfMix.
    args = train_timm.parse_args([])
    assert args.data_dir is None and args.dataset is None  # -> digits
    assert args.model == "preactresnet18" and args.width == 0.25
    assert (args.opt, args.lr, args.momentum, args.weight_decay) == ("momentum", 0.05, 0.9, 1e-4)
    transform = train_timm.build_batch_transform(args, 10)
    assert type(transform) is SalfMix and transform.warmup_epochs == 1
    assert train_timm.method_name(args) == "salfmix"


def test_the_baseline_is_one_flag_away_and_any_augmentation_flag_wins_over_the_default():
    assert train_timm.build_batch_transform(train_timm.parse_args(["--method", "baseline"]), 10) is None
    assert train_timm.method_name(train_timm.parse_args(["--cutmix", "1.0"])) == "cutmix"
    assert train_timm.method_name(train_timm.parse_args(["--cutout"])) == "cutout"


def test_method_names_are_the_registry_names():
    assert tuple(train_timm.METHOD_FLAGS) == methods.METHODS


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--method", "nope"],
        ["--preset", "imagenet"],
        ["--hybrid", "manifold"],
        ["--mixup-mode", "global"],
        ["--mixup-prob", "1.5"],
        ["--epochs", "0"],
        ["--salfmix-grid", "0"],
        ["--lr", "-1"],
        ["--width", "0"],
        ["--batch-size", "many"],
        ["--threads", "-1"],
    ],
)
def test_bad_flags_raise_usage_error(argv):
    with pytest.raises(train_timm.UsageError):
        train_timm.parse_args(argv)


@pytest.mark.parametrize("name", ["cifar", "tinyimagenet"])
def test_presets_are_the_paper_setup(name):
    args = train_timm.parse_args(["--preset", name])
    assert args.model == "preactresnet18" and args.width == 1.0
    assert (args.opt, args.lr, args.momentum, args.weight_decay) == ("momentum", 0.05, 0.9, 1e-4)
    assert (args.epochs, args.sched, args.decay_rate) == (300, "multistep", 0.1)
    assert args.batch_size == {"cifar": 64, "tinyimagenet": 128}[name]
    assert args.salfmix_grid == {"cifar": 4, "tinyimagenet": 8}[name]
    assert args.salfmix_ratio == 0.3


@pytest.mark.parametrize(
    ("name", "decays"),
    [("cifar", (150, 225)), ("tinyimagenet", (75, 150, 225))],  # Section 5.1 of the paper
)
def test_preset_schedule_decays_by_ten_at_the_paper_epochs(name, decays):
    args = train_timm.parse_args(["--preset", name])
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler, num_epochs = train_timm.build_optimizer_and_scheduler(args, model, 10)
    assert num_epochs == 300
    assert isinstance(optimizer, torch.optim.SGD) and not optimizer.defaults["nesterov"]
    lrs = []
    for epoch in range(300):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    # What PyTorch's MultiStepLR(milestones=decays, gamma=0.1) gives for 0-based epochs.
    expected = [0.05 * 0.1 ** sum(epoch >= d for d in decays) for epoch in range(300)]
    assert lrs == pytest.approx(expected)


def test_explicit_flags_override_preset_and_method():
    args = train_timm.parse_args(
        [
            "--preset",
            "tinyimagenet",
            "--method",
            "salfmix",
            "--epochs",
            "5",
            "-b",
            "16",
            "--salfmix-grid",
            "2",
        ]
    )
    assert (args.epochs, args.batch_size, args.salfmix_grid, args.salfmix) == (5, 16, 2, True)
    args = train_timm.parse_args(["--method", "mixup", "--mixup", "0.4"])
    assert args.mixup == 0.4


# --- method -> transform ------------------------------------------------------------------------------

METHOD_ROWS = {
    "baseline": (type(None), {}),
    # The single-image methods overwrite the loader's batch (inplace=True), as timm's Mixup does.
    "cutout": (Cutout, dict(mask_ratio=0.5, warmup_epochs=0, inplace=True)),
    # SalfMix-family rows skip one warm-up epoch, as HybridMix does (Algorithm 2).
    "cutout-sal": (SaliencyCutout, dict(grid=4, ratio=0.3, pool=True, warmup_epochs=1, inplace=True)),
    "salfmix": (SalfMix, dict(grid=4, ratio=0.3, prob=1.0, pool=True, warmup_epochs=1, inplace=True)),
    "salfmix-nosal": (RandomSelfMix, dict(grid=4, ratio=0.3, prob=1.0, warmup_epochs=1, inplace=True)),
    "mixup": (Mixup, dict(mixup_alpha=1.0, prob=1.0, mode="batch")),
    "saliencymix": (SaliencyMix, dict(alpha=1.0)),
    "cutmix": (CutMix, dict(cutmix_alpha=1.0, cutmix_minmax=None)),
    "resizemix": (ResizeMix, dict(scope=(0.1, 0.8))),
    "fmix": (FMix, dict(alpha=1.0, decay_power=3.0, max_soft=0.0, prob=1.0, mode="batch")),
    "hybridmix-v1": (HybridMix, dict(mixup_alpha=1.0, cutmix_alpha=0.0, saliencymix_alpha=0.0)),
    "hybridmix-v2": (HybridMix, dict(mixup_alpha=0.0, cutmix_alpha=0.0, saliencymix_alpha=1.0)),
    "hybridmix-v3": (HybridMix, dict(mixup_alpha=0.0, cutmix_alpha=1.0, saliencymix_alpha=0.0)),
}


def test_method_table_is_complete():
    assert set(METHOD_ROWS) == set(train_timm.METHOD_FLAGS)


@pytest.mark.parametrize("method", list(METHOD_ROWS))
def test_method_maps_to_transform(method):
    cls, config = METHOD_ROWS[method]
    transform = train_timm.build_batch_transform(train_timm.parse_args(["--method", method]), 10)
    assert type(transform) is cls
    if transform is None:
        return
    assert transform.num_classes == 10 and transform.label_smoothing == 0.0
    for key, value in config.items():
        assert getattr(transform, key) == value, key
    assert hasattr(transform, "set_epoch")


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_hybridmix_methods_equal_the_table2_presets(version):
    transform = train_timm.build_batch_transform(
        train_timm.parse_args(["--method", f"hybridmix-{version}"]), 10
    )
    preset = getattr(HybridMix, version)(num_classes=10)
    assert repr(transform) == repr(preset)
    assert (
        transform.salfmix_prob == 1.0 and transform.warmup_epochs == 1
    )  # Algorithm 2: no SalfMix in epoch 0


def test_flag_combinations():
    build = train_timm.build_batch_transform
    both = build(train_timm.parse_args(["--mixup", "0.8", "--cutmix", "1.0"]), 10)
    assert type(both) is HybridMix and both.salfmix_prob == 0.0  # timm's Mixup/CutMix switch
    assert (both.mixup_alpha, both.cutmix_alpha, both.switch_prob) == (0.8, 1.0, 0.5)
    salf_cut = build(train_timm.parse_args(["--salfmix", "--cutmix", "0.5", "--salfmix-prob", "0.5"]), 10)
    assert type(salf_cut) is HybridMix and (salf_cut.cutmix_alpha, salf_cut.salfmix_prob) == (0.5, 0.5)
    resize = build(train_timm.parse_args(["--hybrid", "resizemix", "--salfmix-warmup-epochs", "0"]), 10)
    assert resize.resizemix_scope == (0.1, 0.8) and resize.warmup_epochs == 0 and resize.salfmix_prob == 1.0
    tiny = build(
        train_timm.parse_args(["--preset", "tinyimagenet", "--method", "salfmix", "--smoothing", "0.1"]), 200
    )
    assert (tiny.grid, tiny.num_classes, tiny.label_smoothing) == (8, 200, 0.1)
    nopool = build(train_timm.parse_args(["--salfmix", "--salfmix-no-pool", "--saliency-mode", "eval"]), 10)
    assert nopool.pool is False and nopool.saliency_mode == "eval"
    elem = build(
        train_timm.parse_args(["--cutmix", "1", "--mixup-mode", "elem", "--cutmix-minmax", "0.2", "0.8"]), 10
    )
    assert elem.mode == "elem" and elem.cutmix_minmax == (0.2, 0.8)
    minmax_only = build(train_timm.parse_args(["--cutmix-minmax", "0.3", "0.7"]), 10)  # timm: CutMix on
    assert type(minmax_only) is CutMix and minmax_only.cutmix_minmax == (0.3, 0.7)
    warm = build(
        train_timm.parse_args(["--salfmix", "--salfmix-warmup-epochs", "2", "--salfmix-prob", "0.5"]), 10
    )
    assert (warm.warmup_epochs, warm.prob) == (2, 0.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--cutout", "--salfmix"],
        ["--salfmix", "--random-selfmix"],
        ["--mixup", "1", "--saliencymix", "1"],
        ["--hybrid", "cutmix", "--mixup", "1"],
        ["--cutout", "--cutmix", "1"],
        ["--cutout", "--salfmix-warmup-epochs", "1"],
        ["--mixup", "1", "--salfmix-prob", "0.5"],
        ["--salfmix", "--salfmix-ratio", "0"],
    ],
)
def test_conflicting_methods_are_rejected(argv):
    with pytest.raises(ValueError):
        train_timm.build_batch_transform(train_timm.parse_args(argv), 10)


def test_mixup_off_epoch_switch():
    hybrid = HybridMix.v3(num_classes=10)
    assert disable_mixing(hybrid) is hybrid and hybrid.mixup_enabled is False
    assert disable_mixing(Mixup(num_classes=10)).mixup_enabled is False  # identity from then on
    salfmix = SalfMix(num_classes=10)
    assert disable_mixing(salfmix) is salfmix


# --- data ---------------------------------------------------------------------------------------------


def test_embedded_digits_data_set():
    train_ds, val_ds, num_classes, img_size = build_datasets()
    assert (len(train_ds), len(val_ds), num_classes, img_size) == (1437, 360, 10, 32)
    x, y = val_ds[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    again = build_datasets()[1]
    assert torch.equal(again[0][0], x)  # deterministic split


def test_folder_data_set(tiny_folder):
    train_ds, val_ds, num_classes, img_size = build_datasets(data_dir=str(tiny_folder), val_split="val")
    assert (len(train_ds), len(val_ds), num_classes, img_size) == (16, 8, 2, 32)
    assert train_ds[0][0].shape == (3, 32, 32)
    # "validation" (timm's default name) finds val/.
    assert len(build_datasets(data_dir=str(tiny_folder))[1]) == 8
    assert build_datasets(data_dir=str(tiny_folder), val_split="val", img_size=16)[0][0][0].shape == (
        3,
        16,
        16,
    )


def test_tinyimagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), (i * 100, 0, 0)).save(
                root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG"
            )
        Image.new("RGB", (64, 64), (i * 100, 0, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t64\t64")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train_ds, val_ds, num_classes, img_size = build_datasets(data_dir=str(tmp_path))  # guessed, parent dir
    assert (len(train_ds), len(val_ds), num_classes, img_size) == (4, 2, 2, 64)
    assert [val_ds[i][1] for i in range(2)] == [0, 1]
    assert train_ds[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("name", "sub"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_torchvision_cifar_layout(tmp_path, monkeypatch, name, sub):
    # Small stand-ins for torchvision's pickled batches; their checksums cannot match: the check is skipped.
    import pickle

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    cls = tv_cifar.CIFAR10 if name == "cifar10" else tv_cifar.CIFAR100
    folder = tmp_path / sub
    folder.mkdir()
    label_key = "labels" if name == "cifar10" else "fine_labels"
    rng = np.random.default_rng(0)
    for file_name, _ in cls.train_list + cls.test_list:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), label_key: [0, 1, 2, 3]}
        (folder / file_name).write_bytes(pickle.dumps(entry))
    classes = [f"c{i}" for i in range(10 if name == "cifar10" else 100)]
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: classes}))
    for data_dir in (tmp_path, folder):  # the parent or the extracted folder itself; the kind is guessed
        train_ds, val_ds, num_classes, img_size = build_datasets(data_dir=str(data_dir))
        assert (len(train_ds), len(val_ds), num_classes, img_size) == (
            4 * len(cls.train_list),
            4,
            len(classes),
            32,
        )
        x, y = train_ds[1]
        assert x.shape == (3, 32, 32) and y == 1
    assert build_datasets(name=f"torch/{name}", data_dir=str(tmp_path))[2] == len(classes)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(data_dir="/nonexistent/data"), "does not exist"),
        (dict(name="imagenet-99"), "unknown dataset"),
        (dict(name="cifar10", data_dir="."), "cifar-10-batches-py"),
        (dict(name="digits", data_dir="."), "embedded"),
    ],
)
def test_data_errors(kwargs, needle):
    with pytest.raises(DatasetError, match=needle):
        build_datasets(**kwargs)


# --- real runs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "extra"),
    # No warm-up epoch, so that SalfMix really runs in the single epoch.
    [
        ("baseline", []),
        ("salfmix", ["--salfmix-warmup-epochs", "0"]),
        ("hybridmix-v3", ["--salfmix-warmup-epochs", "0"]),
    ],
)
def test_one_epoch_run(tiny_folder, tmp_path, capsys, method, extra):
    rc = train_timm.main(tiny_args(tiny_folder, tmp_path, method, "--method", method, *extra))
    out, err = capsys.readouterr()
    assert rc == 0, err
    run_dir = tmp_path / method
    rows = read_summary(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0]
    row = rows[0]
    assert math.isfinite(float(row["train_loss"])) and float(row["train_loss"]) > 0
    for key in ("eval_top1_err", "eval_top5_err"):
        assert 0.0 <= float(row[key]) <= 100.0
    assert float(row["train_epoch_time"]) > 0 and float(row["lr"]) == pytest.approx(0.05)
    aug = float(row["train_aug_time"])
    assert aug > 0 and aug < float(row["train_epoch_time"])
    assert (run_dir / "last.pth.tar").is_file() and (run_dir / "checkpoint-0.pth.tar").is_file()
    results = read_results(run_dir)
    assert results["best_epoch"] == 0 and results["method"] == method and results["dataset"] == "folder"
    assert results["best_top1_err"] == pytest.approx(float(row["eval_top1_err"]))
    assert "epoch 0 [1/1]" in out


def test_epochs_are_numbered_the_same_way_everywhere(tiny_folder, tmp_path, capsys):
    # Issue 13, observation 5: the per-epoch lines counted from 1, "best ... at epoch N" and results.json
    # from 0. Now every place counts from 0, as timm's summary.csv and checkpoint names do.
    argv = tiny_args(tiny_folder, tmp_path, "numbered", "--method", "cutout", "--epochs", "2")
    assert train_timm.main(argv) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "numbered"
    logged = [int(n) for n in re.findall(r"^epoch (\d+) \[\d+/2\]", out, flags=re.MULTILINE)]
    assert logged == [int(r["epoch"]) for r in read_summary(run_dir)] == [0, 1]
    results = read_results(run_dir)
    best = re.search(r"best top-1 error .* at epoch (\d+);", out)
    assert best is not None and int(best.group(1)) == results["best_epoch"] in (0, 1)
    assert (run_dir / f"checkpoint-{results['best_epoch']}.pth.tar").is_file()
    # Absolute paths, so that results.json still points at the run from another working directory.
    assert os.path.isabs(results["output_dir"]) and Path(results["output_dir"]) == run_dir.resolve()
    assert str(run_dir.resolve()) in out.strip().splitlines()[-1]  # the last line says where the run is


def test_the_first_epoch_is_the_warm_up_and_the_second_runs_salfmix(tiny_folder, tmp_path, monkeypatch):
    # Issue 16, item 15: a loop that called set_epoch(epoch + 1) would skip the warm-up of Algorithm 2.
    from salfmix_transforms import saliency as saliency_module

    calls: list[int] = []
    passes_at_epoch_start: list[int] = []
    real_saliency, real_epoch = saliency_module.gradient_saliency, train_timm.train_one_epoch

    def counting_saliency(*args, **kwargs):
        calls.append(1)
        return real_saliency(*args, **kwargs)

    def recording_epoch(run, epoch, *args, **kwargs):
        passes_at_epoch_start.append(len(calls))
        return real_epoch(run, epoch, *args, **kwargs)

    monkeypatch.setattr(saliency_module, "gradient_saliency", counting_saliency)
    monkeypatch.setattr(train_timm, "train_one_epoch", recording_epoch)
    argv = tiny_args(tiny_folder, tmp_path, "warm", "--method", "salfmix", "--epochs", "2")
    assert train_timm.main(argv) == 0
    batches = len(calls)
    assert passes_at_epoch_start == [0, 0]  # epoch 0 (the warm-up) ran no saliency pass
    assert batches == 16 // 8  # epoch 1 did, once per batch (16 training images, batch 8)


@pytest.mark.parametrize("workers", ["0", pytest.param("1", marks=pytest.mark.slow)])
def test_resume_continues_the_same_run(tiny_folder, tmp_path, capsys, workers):
    common = ["--method", "salfmix", "--sched", "constant", "--workers", workers]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "straight", *common, "--epochs", "2")) == 0
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "split", *common)) == 0
    split = tmp_path / "split"
    ckpt = torch.load(split / "last.pth.tar", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["arch"] == "preactresnet18" and "train_state" in ckpt
    # Without --output / --experiment the run continues in the checkpoint's own folder.
    argv = tiny_args(tiny_folder, tmp_path, "split", *common, "--resume", str(split / "last.pth.tar"))
    argv = argv[: argv.index("--output")] + argv[argv.index("--no-progress") :]
    argv[argv.index("--epochs") + 1] = "2"
    assert train_timm.main(argv) == 0
    capsys.readouterr()
    rows = read_summary(split)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert (split / "checkpoint-1.pth.tar").is_file()
    results = read_results(split)
    assert results["start_epoch"] == 1
    # The times cover both invocations: the checkpoint carries the first epoch's seconds.
    for key, column in (("train_time_s", "train_epoch_time"), ("aug_time_s", "train_aug_time")):
        assert results[key] == pytest.approx(sum(float(row[column]) for row in rows)), key
    assert results["train_time_s"] > float(rows[1]["train_epoch_time"])
    # Model, optimizer and RNG states restored: the second epoch is the uninterrupted run's second epoch.
    straight = read_summary(tmp_path / "straight")
    for key in ("train_loss", "eval_loss", "eval_top1_err"):
        assert float(rows[1][key]) == pytest.approx(float(straight[1][key]), rel=1e-5, abs=1e-6), key


def test_amp_channels_last_ema_and_resume_with_ema(tiny_folder, tmp_path, capsys):
    extra = ["--method", "cutmix", "--amp", "--channels-last", "--model-ema", "--model-ema-decay", "0.9"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "opts", *extra)) == 0
    run_dir = tmp_path / "opts"
    row = read_summary(run_dir)[0]
    assert math.isfinite(float(row["train_loss"])) and "eval_ema_top1_err" in row
    ckpt = torch.load(run_dir / "last.pth.tar", map_location="cpu", weights_only=False)
    assert "state_dict_ema" in ckpt
    resume = ["--resume", str(run_dir / "last.pth.tar"), "--epochs", "2", "--mixup-off-epoch", "1"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "opts", *extra, *resume)) == 0
    capsys.readouterr()
    assert [int(r["epoch"]) for r in read_summary(run_dir)] == [0, 1]


@pytest.mark.slow
def test_torchcompile_run_with_hybridmix(tiny_folder, tmp_path, capsys):
    # The eager backend runs the compiled-model path (saliency through torch.compile), no C++ build.
    extra = ["--method", "hybridmix-v1", "--epochs", "2", "--torchcompile", "eager"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "compiled", *extra)) == 0
    capsys.readouterr()
    rows = read_summary(tmp_path / "compiled")
    assert len(rows) == 2 and all(math.isfinite(float(r["train_loss"])) for r in rows)
    ckpt = torch.load(tmp_path / "compiled" / "last.pth.tar", map_location="cpu", weights_only=False)
    assert not any(k.startswith("_orig_mod.") for k in ckpt["state_dict"])


# --- bad input: exit code 2, one line on stderr -------------------------------------------------------


def test_bad_input_one_line_errors(tiny_folder, tmp_path, capsys):
    # A checkpoint to misuse.
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "base")) == 0
    ckpt = str(tmp_path / "base" / "last.pth.tar")
    capsys.readouterr()
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    cases = [
        (["--data-dir", str(tmp_path / "missing")], "does not exist"),
        (["--model", "no_such_net"], "unknown model"),
        (["--method", "nope"], "--method"),
        (["--dataset", "imagenet-99", "--data-dir", str(tiny_folder)], "unknown dataset"),
        (["--bogus"], "unrecognized arguments"),
        (
            tiny_args(tiny_folder, tmp_path, "g", "--method", "salfmix", "--salfmix-grid", "64"),
            "--salfmix-grid",
        ),
        (tiny_args(tiny_folder, tmp_path, "o", "--cutout", "--salfmix"), "single-image method"),
        (
            tiny_args(tiny_folder, tmp_path, "r", "--model", "preactresnet50", "--resume", ckpt),
            "preactresnet18",
        ),
        (tiny_args(tiny_folder, tmp_path, "w", "--width", "0.25", "--resume", ckpt), "--width"),
        (
            tiny_args(tiny_folder, tmp_path, "m", "--resume", str(tmp_path / "nope.pth.tar")),
            "does not exist",
        ),
        (tiny_args(tiny_folder, tmp_path, "j", "--resume", str(junk)), "cannot read checkpoint"),
        (tiny_args(tiny_folder, tmp_path, "b", "-b", "64"), "--batch-size"),
        (tiny_args(tiny_folder, tmp_path, "k", "--num-classes", "1"), "--num-classes"),
        (tiny_args(tiny_folder, tmp_path, "t", "--model", "resnet18", "--width", "0.5"), "--width"),
        (tiny_args(tiny_folder, tmp_path, "v", "--val-split", "holdout"), "holdout"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA is not available"))
    for argv, needle in cases:
        run_fails(capsys, argv, needle)


@pytest.mark.slow
def test_bad_input_exit_code_of_the_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path / "missing"), "--no-progress"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "does not exist")


# --- distributed --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_cpu_processes_with_salfmix(tiny_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(SCRIPT),
        *tiny_args(tiny_folder, tmp_path, "ddp", "--method", "salfmix", "-b", "4", "--device", "cpu"),
        "--salfmix-warmup-epochs", "0", "--val-split", "val7",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "ddp"
    rows = read_summary(run_dir)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["train_loss"]))
    # Each of the 7 validation images is counted once over the two ranks (no padding to an even split).
    wrong = float(rows[0]["eval_top1_err"]) * 7 / 100
    assert wrong == pytest.approx(round(wrong), abs=1e-6)
    results = read_results(run_dir)
    assert results["world_size"] == 2 and results["best_epoch"] == 0
    ckpt = torch.load(run_dir / "last.pth.tar", map_location="cpu", weights_only=False)
    assert len(ckpt["train_state"]["rng"]) == 2  # every rank's RNG state, for an exact resume
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # saved unwrapped


@pytest.mark.slow
def test_torchrun_run_folder_error_stops_every_rank_with_one_line(tiny_folder, tmp_path):
    """Rank 0 creates the run folder; when it cannot (a file in the way), every rank stops with its line
    instead of rank 1 training on into a collective that rank 0 never joins."""
    (tmp_path / "afile").write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    flags = ["--method", "baseline", "-b", "4", "--device", "cpu"]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(SCRIPT),
        *tiny_args(tiny_folder, tmp_path / "afile", "ddp", *flags),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("train_timm.py: error: cannot create the run folder") == 2, proc.stderr[-3000:]
    assert "[rank1]: Traceback" not in proc.stderr


# --- --saliency-source (issue 14) ------------------------------------------------------------------------


def _count_saliency_passes(monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every exact saliency pass."""
    from salfmix_transforms import saliency as saliency_module

    shapes: list[tuple[int, ...]] = []
    real = saliency_module.gradient_saliency

    def counting(model, x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(saliency_module, "gradient_saliency", counting)
    return shapes


@pytest.mark.parametrize("method", ["salfmix", "hybridmix-v1"])
def test_cached_saliency_runs_no_extra_pass_and_keeps_the_cache_in_the_checkpoint(
    tiny_folder, tmp_path, monkeypatch, method
):
    passes = _count_saliency_passes(monkeypatch)
    argv = tiny_args(tiny_folder, tmp_path, "cached", "--method", method, "--saliency-source", "cached")
    assert train_timm.main([*argv, "--epochs", "2"]) == 0
    assert passes == []  # the maps come from the training steps' own backward
    run_dir = tmp_path / "cached"
    ckpt = torch.load(run_dir / "last.pth.tar", map_location="cpu", weights_only=False)
    cache = ckpt["train_state"]["saliency_cache"]
    assert cache["maps"].shape == (16, 16, 16)
    # 16 images, batch 8: every image is seen in both epochs; the last write is epoch 1's.
    assert cache["written_epoch"].tolist() == [1] * 16
    assert float(cache["maps"].float().abs().sum()) > 0
    assert read_results(run_dir)["saliency_source"] == "cached"


def test_cached_saliency_resumes_with_its_cache(tiny_folder, tmp_path):
    common = ["--method", "salfmix", "--saliency-source", "cached", "--sched", "constant"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "first", *common)) == 0
    first = torch.load(tmp_path / "first" / "last.pth.tar", map_location="cpu", weights_only=False)
    assert first["train_state"]["saliency_cache"]["written_epoch"].tolist() == [0] * 16  # warm-up fills it
    argv = tiny_args(tiny_folder, tmp_path, "first", *common, "--epochs", "2")
    assert train_timm.main([*argv, "--resume", str(tmp_path / "first" / "last.pth.tar")]) == 0
    second = torch.load(tmp_path / "first" / "last.pth.tar", map_location="cpu", weights_only=False)
    assert second["train_state"]["saliency_cache"]["written_epoch"].tolist() == [1] * 16


def test_the_refresh_option_runs_the_exact_pass_for_old_maps(tiny_folder, tmp_path, monkeypatch):
    passes = _count_saliency_passes(monkeypatch)
    argv = tiny_args(tiny_folder, tmp_path, "refresh", "--method", "salfmix", "--saliency-source", "cached")
    assert train_timm.main([*argv, "--epochs", "3", "--saliency-refresh", "1"]) == 0
    assert passes == []  # every map is one epoch old at its next visit: never older than 1
    argv = tiny_args(tiny_folder, tmp_path, "refresh0", "--method", "salfmix", "--saliency-source", "cached")
    assert train_timm.main([*argv, "--epochs", "3", "--saliency-refresh", "0"]) == 0
    # K = 0: every written map is refreshed, once per batch after the warm-up epoch (2 epochs x 2 batches).
    assert passes == [(8, 3, 32, 32)] * 4


def test_lowres_saliency_runs_the_pass_on_the_half_size_batch(tiny_folder, tmp_path, monkeypatch):
    passes = _count_saliency_passes(monkeypatch)
    argv = tiny_args(tiny_folder, tmp_path, "lowres", "--method", "salfmix", "--saliency-source", "lowres")
    assert train_timm.main([*argv, "--salfmix-warmup-epochs", "0"]) == 0
    assert passes and all(shape[2:] == (16, 16) for shape in passes)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            ["--method", "mixup", "--saliency-source", "cached"],
            "needs a method that takes the model's saliency",
        ),
        (["--method", "salfmix-nosal", "--saliency-source", "lowres"], "salfmix-nosal"),
        (["--method", "salfmix", "--saliency-refresh", "2"], "--saliency-source cached"),
    ],
)
def test_saliency_source_errors_are_one_line(tiny_folder, tmp_path, capsys, extra, needle):
    run_fails(capsys, tiny_args(tiny_folder, tmp_path, "bad", *extra), needle)


# --- review findings ------------------------------------------------------------------------------------


def test_resuming_with_another_saliency_source_is_refused(tiny_folder, tmp_path, capsys):
    common = ["--method", "salfmix", "--saliency-source", "cached"]
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "src", *common)) == 0
    # A flag not given is the checkpoint's (engine.parse_args): another one given explicitly is refused.
    argv = tiny_args(tiny_folder, tmp_path, "src", "--method", "salfmix", "--epochs", "2")
    resume = ["--resume", str(tmp_path / "src" / "last.pth.tar")]
    run_fails(capsys, [*argv, "--saliency-source", "exact", *resume], "--saliency-source cached")


def test_a_saliency_scale_without_the_lowres_source_is_reported(tiny_folder, tmp_path, capsys):
    argv = tiny_args(tiny_folder, tmp_path, "scale", "--method", "salfmix", "--saliency-scale", "0.25")
    assert train_timm.main(argv) == 0
    assert "--saliency-scale given, but" in capsys.readouterr().out


def test_a_run_that_ends_inside_the_warm_up_says_salfmix_never_runs(tiny_folder, tmp_path, capsys):
    assert train_timm.main(tiny_args(tiny_folder, tmp_path, "short", "--method", "salfmix")) == 0
    assert "the warm-up covers all 1 epoch(s): SalfMix never runs" in capsys.readouterr().out
