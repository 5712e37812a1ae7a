"""train_seg.py --saliency-source exact|cached|lowres (issue 22, item 4): the flags, the check, the cached
step and the cache restore of train_timm.py, shared (salfmix_transforms.saliency_sources).

Every run is tiny (16 synthetic 64x64 scenes, batch 8, one or two epochs).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torchvision.transforms import v2

import train_seg
import train_timm
from salfmix_transforms import engine
from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates
from salfmix_transforms.segmentation import SyntheticShapes, joint_transform

TINY = ["--limit-train", "16", "--limit-val", "8", "-b", "8", "--threads", "2", "--no-progress"]


def _run(tmp_path, *flags: str, name: str = "run") -> tuple[int, str]:
    rc = train_seg.main([*flags, *TINY, "--output", str(tmp_path), "--experiment", name])
    return rc, str(tmp_path / name)


def _count_saliency_passes(monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every exact saliency pass (lowres calls it on the down-scaled batch)."""
    from salfmix_transforms import saliency as saliency_module

    shapes: list[tuple[int, ...]] = []
    real = saliency_module.gradient_saliency

    def counting(model, x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(saliency_module, "gradient_saliency", counting)
    return shapes


def _ckpt(folder: str) -> dict:
    return torch.load(os.path.join(folder, "last.pth.tar"), map_location="cpu", weights_only=False)


# -- one implementation --------------------------------------------------------------------------------------


def test_both_scripts_share_one_implementation():
    from salfmix_transforms import saliency_sources

    assert train_timm.check_saliency_source is saliency_sources.check_saliency_source
    assert train_timm._restore_saliency_cache is saliency_sources.restore_saliency_cache
    for flags in (train_timm.build_parser(), train_seg.build_parser()):
        args = flags.parse_args(["--saliency-source", "lowres", "--saliency-scale", "0.25"])
        assert (args.saliency_source, args.saliency_scale, args.saliency_refresh) == ("lowres", 0.25, None)


# -- the data pipeline carries source coordinates ------------------------------------------------------------


def with_source_coordinates(dataset):
    from salfmix_transforms.segmentation import with_source_coordinates as wrap

    return wrap(dataset)


def _source_pixel(coords: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (coords[0] * height).floor().long(), (coords[1] * width).floor().long()


def test_training_samples_carry_index_and_coordinates_moved_like_the_mask():
    ds = SyntheticShapes("train", limit=4)
    raw_masks = ds.masks.long()
    ds.transform = joint_transform(True, (40, 48))  # random crop and flip
    views = with_source_coordinates(ds)
    assert len(views) == 4
    torch.manual_seed(0)
    for i in range(4):
        image, mask, index, coords = views[i]
        assert index == i and image.shape == (3, 40, 48) and mask.shape == (40, 48)
        assert coords.dtype == torch.float32 and coords.shape == (2, 40, 48)
        assert type(coords) is torch.Tensor
        rows, cols = _source_pixel(coords, 64, 64)
        assert torch.equal(mask, raw_masks[i][rows, cols]), "each pixel's coordinates name its mask pixel"


def test_padding_has_no_source_coordinates():
    ds = SyntheticShapes("train", limit=1)
    ds.transform = joint_transform(True, (72, 64))  # taller than the 64x64 scene: padded
    _, mask, _, coords = with_source_coordinates(ds)[0]
    padded = mask == 255
    outside = ((coords <= 0) | (coords >= 1)).any(0)
    assert bool(padded.any()) and bool(outside.any())
    assert (coords[:, outside] == 0).all(), "padding is marked 0 (from no pixel of the image)"
    assert padded[outside].all()


def test_a_map_written_for_a_flipped_view_reads_back_flipped():
    ds = SyntheticShapes("train", limit=2)
    ds.transform = v2.Compose([v2.RandomHorizontalFlip(p=1.0)])
    views = with_source_coordinates(ds)
    flipped = torch.stack([views[i][3] for i in range(2)])
    plain = source_coordinates(64, 64).expand(2, -1, -1, -1)
    assert torch.equal(flipped, plain.flip(-1)), "a flip moves the coordinates as it moves the mask"
    cache = SaliencyCache(2)
    hot_left = torch.zeros(2, 64, 64)
    hot_left[:, :, :16] = 1.0  # saliency of the flipped view: its left quarter
    indices = torch.arange(2)
    cache.write(indices, flipped, hot_left, epoch=0)
    unflipped = cache.read(indices, plain)
    assert (unflipped[:, :, 48:] > 0.99).all() and (unflipped[:, :, :48] == 0).all(), "the original's right"
    relative = hot_left / hot_left.mean()  # as the cache stores a write of the whole view
    assert torch.equal(cache.read(indices, flipped), relative), "the next flipped view reads its left"


# -- training runs -------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["salfmix", "hybridmix-v3"])
def test_cached_runs_make_no_saliency_pass_and_keep_the_cache(tmp_path, monkeypatch, method):
    passes = _count_saliency_passes(monkeypatch)
    rc, folder = _run(tmp_path, "--method", method, "--saliency-source", "cached", "--epochs", "2")
    assert rc == 0
    assert passes == [], "the maps come from the training steps' own backward"
    cache = _ckpt(folder)["train_state"]["saliency_cache"]
    assert cache["maps"].shape == (16, 16, 16)
    assert cache["written_epoch"].tolist() == [1] * 16  # every scene seen in both epochs
    assert float(cache["maps"].float().abs().sum()) > 0
    with open(os.path.join(folder, "results.json")) as f:
        assert json.load(f)["saliency_source"] == "cached"


def test_the_exact_source_still_runs_the_pass(tmp_path, monkeypatch):
    passes = _count_saliency_passes(monkeypatch)
    rc, folder = _run(tmp_path, "--method", "salfmix", "--salfmix-warmup-epochs", "0", "--epochs", "1")
    assert rc == 0 and passes == [(8, 3, 64, 64)] * 2
    assert _ckpt(folder)["train_state"]["saliency_cache"] is None


def test_the_refresh_option_runs_the_exact_pass_for_old_maps(tmp_path, monkeypatch):
    passes = _count_saliency_passes(monkeypatch)
    flags = ["--method", "salfmix", "--saliency-source", "cached", "--epochs", "2", "--saliency-refresh", "0"]
    assert _run(tmp_path, *flags)[0] == 0
    assert passes == [(8, 3, 64, 64)] * 2  # epoch 1 (after the warm-up epoch): every map is refreshed


@pytest.mark.slow
def test_the_cache_survives_a_resume(tmp_path):
    common = ["--method", "salfmix", "--saliency-source", "cached", "--sched", "constant"]
    rc, folder = _run(tmp_path, *common, "--epochs", "1")
    assert rc == 0
    first = _ckpt(folder)["train_state"]["saliency_cache"]
    assert first["written_epoch"].tolist() == [0] * 16  # the warm-up epoch fills it
    args = train_seg.parse_args(["--resume", folder, "--epochs", "2", *TINY, "--output", str(tmp_path)])
    run = engine.setup(train_seg.TASK, args)
    assert torch.equal(run.saliency_cache.maps, first["maps"])
    assert torch.equal(run.saliency_cache.written_epoch, first["written_epoch"])
    assert train_seg.main(["--resume", folder, "--epochs", "2", *TINY]) == 0
    assert _ckpt(folder)["train_state"]["saliency_cache"]["written_epoch"].tolist() == [1] * 16


def test_resuming_with_another_saliency_source_is_refused(tmp_path, capsys):
    rc, folder = _run(tmp_path, "--method", "salfmix", "--saliency-source", "cached", "--epochs", "1")
    assert rc == 0
    capsys.readouterr()
    rc = train_seg.main(["--resume", folder, "--epochs", "2", "--saliency-source", "exact", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "--saliency-source cached" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize(("scale", "side"), [(None, 32), ("0.25", 16)])
def test_lowres_runs_the_pass_at_the_saliency_scale(tmp_path, monkeypatch, scale, side):
    passes = _count_saliency_passes(monkeypatch)
    flags = ["--method", "salfmix", "--saliency-source", "lowres", "--salfmix-warmup-epochs", "0"]
    flags += ["--epochs", "1"] + ([] if scale is None else ["--saliency-scale", scale])
    assert _run(tmp_path, *flags)[0] == 0
    assert passes == [(8, 3, side, side)] * 2


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (("--saliency-scale", "0.25"), "--saliency-scale given, but --saliency-source exact does not use it"),
        (
            ("--saliency-source", "cached", "--saliency-mode", "eval"),
            "--saliency-mode given, but --saliency-source cached without --saliency-refresh makes no "
            "saliency pass",
        ),
    ],
    ids=["scale-without-lowres", "mode-with-cached"],
)
def test_a_saliency_flag_that_the_source_does_not_use_is_reported_once(tmp_path, caplog, flags, needle):
    """The warning names the saliency source as the reason (not the method, which does take saliency); the
    mode of a cached run without refresh was ignored silently (found by a review)."""
    with caplog.at_level("WARNING"):
        assert _run(tmp_path, "--method", "salfmix", "--epochs", "1", *flags)[0] == 0
    assert caplog.text.count(needle) == 1, caplog.text
    assert "the salfmix run does not use" not in caplog.text


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--method", "mixup", "--saliency-source", "cached"], "needs a method that takes the model's"),
        (["--method", "baseline", "--saliency-source", "lowres"], "not baseline"),
        (["--method", "salfmix", "--saliency-refresh", "2"], "--saliency-refresh goes with --saliency"),
        (["--saliency-source", "bogus"], "invalid choice"),
        (["--saliency-source", "lowres", "--saliency-scale", "0"], "--saliency-scale must lie in (0, 1]"),
    ],
)
def test_bad_combinations_are_one_line_errors(tmp_path, capsys, flags, needle):
    rc, folder = _run(tmp_path, *flags, "--epochs", "1")
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert err.startswith("train_seg.py: error:") and err.count("\n") == 1
    assert not os.path.exists(folder)


def test_a_saliency_pass_that_batchnorm_cannot_run_is_one_line_during_training(tmp_path, capsys):
    """A batch of 1 at a saliency scale that leaves BatchNorm one value per channel (found by a review with
    lraspp at --saliency-scale 0.25; tinyseg at 0.01 gives a 1x1 image): the error comes from inside the
    training loop and was a traceback (exit 1); now one line naming the flags that fix it, exit 2."""
    flags = ("--method", "salfmix", "--saliency-source", "lowres", "--saliency-scale", "0.01")
    flags += ("--salfmix-warmup-epochs", "0")
    rc = train_seg.main(
        [*TINY, *flags, "--epochs", "1", "-b", "1", "--limit-train", "2", "--output", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("train_seg.py: error: ") and err.count("\n") == 1, err
    assert "BatchNorm" in err and "--saliency-mode eval" in err and "Traceback" not in err


def test_a_cache_write_does_not_depend_on_the_scale_of_the_gradient():
    """fp16 AMP's GradScaler multiplies ``x.grad`` by a loss scale that doubles or halves during training,
    and a converging network's gradients shrink: a cell written at one step must compare with one written at
    another (the cells a view does not show, or that were pasted over, keep an older write). The maps after
    writes of ``k1 * g1`` then ``k2 * g2`` are those after ``g1`` then ``g2``."""
    from types import SimpleNamespace

    from salfmix_transforms import saliency_sources

    noise = torch.Generator().manual_seed(0)
    g1, g2 = (torch.randn(2, 3, 16, 16, generator=noise) for _ in range(2))
    half = torch.ones(2, 16, 16)
    half[:, :, 8:] = 0.0  # the second write's right half was pasted over: its cells keep the first write

    def maps_after(k1: float, k2: float) -> torch.Tensor:
        cache = SaliencyCache(2, resolution=8)
        run = SimpleNamespace(saliency_cache=cache, transform=SimpleNamespace(), args=SimpleNamespace())
        run.args.distributed = False
        coords = source_coordinates(16, 16).expand(2, -1, -1, -1)
        for epoch, (k, gradient, own) in enumerate(((k1, g1, None), (k2, g2, half))):
            x = torch.zeros(2, 3, 16, 16)
            x.grad, run.transform.provenance = k * gradient, own
            saliency_sources.write_cached_saliency(run, torch.arange(2), coords, x, epoch)
        return cache.maps.float()

    torch.testing.assert_close(maps_after(1e4, 1e-3), maps_after(1.0, 1.0), rtol=1e-2, atol=0.0)


def test_the_refresh_pass_of_a_single_stale_sample_runs_in_training_mode():
    """``--saliency-refresh K`` runs the exact pass on the batch's stale samples; when only one is stale
    (e.g. one that ``drop_last`` left out), BatchNorm in training mode cannot normalise it alone (found by a
    review: the run would stop). Its map comes from the pass over the whole batch."""
    from types import SimpleNamespace

    from _batch_helpers import tiny_classifier

    from salfmix_transforms import saliency_sources

    cache = SaliencyCache(4)
    cache.written_epoch.copy_(torch.tensor([5, 5, 0, 5]))  # sample 2 was last written 5 epochs ago
    run = SimpleNamespace(
        model=tiny_classifier(3, batchnorm=True),
        transform=SimpleNamespace(in_warmup=False),
        args=SimpleNamespace(saliency_refresh=1, saliency_mode=None),
    )
    # 1x1 images: one value per channel for BatchNorm, as a feature map pooled to 1x1 gives a real network
    x, y = torch.rand(4, 3, 1, 1, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    coords = source_coordinates(1, 1).expand(4, -1, -1, -1)
    maps = saliency_sources.cached_saliency(run, cache, x, y, torch.arange(4), coords, epoch=5)
    assert bool((maps[2] > 0).any()) and bool(torch.isfinite(maps).all())
    assert bool((maps[[0, 1, 3]] == 0).all())  # read from the cache (never measured: 0)


# -- precision flags: the same in both scripts ---------------------------------------------------------------


@pytest.mark.parametrize("script", [train_timm, train_seg], ids=["train_timm", "train_seg"])
def test_both_scripts_take_the_precision_flags(script):
    args = script.build_parser().parse_args(
        ["--amp", "--amp-dtype", "bfloat16", "--channels-last", "--torchcompile"]
    )
    assert (args.amp, args.amp_dtype, args.channels_last, args.torchcompile) == (
        True,
        "bfloat16",
        True,
        "inductor",
    )


def test_channels_last_trains_a_channels_last_model_on_channels_last_batches(tmp_path, monkeypatch):
    """--channels-last with the cached source: the model's weights and every training batch are
    channels_last, and the step's input gradient still fills the cache."""
    from salfmix_transforms import segmentation

    seen: list[tuple[bool, bool]] = []
    real = segmentation.build_model

    def recording(name, num_classes):
        model = real(name, num_classes)

        def record(module, inputs):
            if module.training:
                x, weight = inputs[0], module.stem[0].weight
                seen.append((x.is_contiguous(memory_format=torch.channels_last),
                             weight.is_contiguous(memory_format=torch.channels_last)))  # fmt: skip

        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(segmentation, "build_model", recording)
    flags = ["--method", "salfmix", "--saliency-source", "cached", "--epochs", "1", "--channels-last"]
    rc, folder = _run(tmp_path, *flags)
    assert rc == 0
    assert seen == [(True, True)] * 2  # 16 scenes, batch 8
    assert float(_ckpt(folder)["train_state"]["saliency_cache"]["maps"].float().abs().sum()) > 0


def test_an_amp_dtype_turns_amp_on_in_both_scripts(capsys):
    for script in (train_timm, train_seg):
        assert script.parse_args(["--amp-dtype", "bfloat16"]).amp is True
    assert train_seg.main(["--amp-dtype", "float16", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--amp-dtype float16 needs CUDA" in err


@pytest.mark.parametrize("script", [train_timm, train_seg], ids=["train_timm", "train_seg"])
def test_float16_amp_gets_a_loss_scaler_in_both_scripts(script, tmp_path, monkeypatch, tiny_folder):
    """fp16 autocast (CUDA's --amp) needs a GradScaler: the engine makes it for either task."""
    from timm.utils import NativeScaler

    monkeypatch.setattr(engine, "resolve_amp", lambda args, device: torch.float16)
    if script is train_seg:
        argv = [*TINY, "--output", str(tmp_path)]
    else:
        from _train_helpers import tiny_args

        argv = tiny_args(tiny_folder, tmp_path, "t")
    run = engine.setup(script.TASK, script.parse_args(argv))
    assert isinstance(run.loss_scaler, NativeScaler)
