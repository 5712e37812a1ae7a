"""No host synchronisation in the hot path (issue 22, item 2).

A GPU training step must not wait for the host inside a transform call: no ``.item()`` / ``.tolist()`` /
``bool(tensor)`` / ``int(tensor)`` / ``float(tensor)``, no ``.cpu()`` / ``.numpy()``, no blocking copy, no
data-dependent shape (``nonzero``, boolean-mask indexing, ``unique``) of the batch's own values.

* On the CPU (the default run) every registry method is called on ``device="meta"`` tensors: a meta tensor
  has a shape and no data, so any operation that reads the data's values on the host fails there, while the
  random draws that the transforms make on the host (as timm draws ``lam`` with NumPy) still work. The
  model path runs too: autograd (the gradient saliency of eq. (2)-(3)) works on a model moved to meta.
* With ``pytest --device cuda`` the same calls run on the GPU under
  ``torch.cuda.set_sync_debug_mode("error")``, which raises on every synchronising CUDA call (a blocking
  copy included).

Every call is past the warm-up (``set_epoch(1)``): the registry's default mode otherwise.
"""

from __future__ import annotations

import pytest
import torch
from _batch_helpers import images, tiny_classifier

from salfmix_transforms import methods
from salfmix_transforms.engine import SpanClock

K = 5
B, H, W = 4, 16, 16
TRANSFORMS = [name for name in methods.METHODS if name != "baseline"]
#: The methods whose saliency comes from the model being trained (or a map given as ``saliency=``).
WITH_SALIENCY = [name for name in TRANSFORMS if methods.spec(name).needs_model]
TARGETS = ("indices", "soft")
META = torch.device("meta")


def _past_warmup(fn):
    fn.set_epoch(1)
    return fn


def _target(kind: str, device: torch.device) -> torch.Tensor:
    """Class indices (B,) or soft targets (B, K), uninitialised (meta: no data at all)."""
    if kind == "indices":
        return torch.empty(B, dtype=torch.long, device=device)
    return torch.empty(B, K, device=device)


def _assert_result(out: torch.Tensor, target: torch.Tensor, device: torch.device) -> None:
    assert out.device.type == device.type and out.shape == (B, 3, H, W) and out.dtype == torch.float32
    assert target.device.type == device.type and target.shape == (B, K)


# -- meta tensors: the CPU run's check ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_method_runs_on_meta_tensors(name, kind):
    fn = _past_warmup(methods.build(name, K))
    x = torch.empty(B, 3, H, W, device=META)
    extra = {"saliency": torch.empty(B, H, W, device=META)} if name in WITH_SALIENCY else {}
    out, target = fn(x, _target(kind, META), **extra)
    _assert_result(out, target, META)


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", WITH_SALIENCY)
def test_the_model_saliency_path_runs_on_meta_tensors(name, kind):
    # The gradient saliency (forward, input-only backward, BatchNorm state put back) on a meta model.
    model = tiny_classifier(K, batchnorm=True).to(META)
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = fn(torch.empty(B, 3, H, W, device=META), _target(kind, META))
    _assert_result(out, target, META)


def test_a_dense_class_mask_runs_on_meta_tensors():
    # The dense targets' value checks (class range, ignore_index) are device-side too.
    fn = _past_warmup(methods.build("hybridmix-v3", K))
    mask = torch.empty(B, H, W, dtype=torch.long, device=META)
    out, target = fn(torch.empty(B, 3, H, W, device=META), mask, saliency=torch.empty(B, H, W, device=META))
    assert out.shape == (B, 3, H, W) and target.shape == (B, K, H, W) and target.device == META


# -- CUDA: the same calls under sync debug mode "error" (pytest --device cuda) -----------------------------


def _call_without_sync(fn, x, target, **extra):
    """One call of ``fn`` with every synchronising CUDA call raising; a first call outside the check does the
    one-time set-up (cuDNN handles, the per-shape index tables)."""
    fn(x, target, **extra)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, mixed = fn(x, target, **extra)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    return out, mixed


def _cuda_only(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA only (pytest --device cuda); on the CPU the meta tests check the same calls")


def _cuda_target(kind: str, device: torch.device) -> torch.Tensor:
    labels = torch.arange(B, device=device) % K
    return labels if kind == "indices" else torch.nn.functional.one_hot(labels, K).float()


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_method_makes_no_host_sync_on_cuda(device, name, kind):
    _cuda_only(device)
    x = images(B, 3, H, W).to(device)
    extra = {"saliency": torch.rand(B, H, W, device=device)} if name in WITH_SALIENCY else {}
    out, target = _call_without_sync(
        _past_warmup(methods.build(name, K)), x, _cuda_target(kind, device), **extra
    )
    _assert_result(out, target, device)
    assert torch.isfinite(out).all() and torch.isfinite(target).all()


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("name", WITH_SALIENCY)
def test_the_model_saliency_path_makes_no_host_sync_on_cuda(device, name, kind):
    _cuda_only(device)
    model = tiny_classifier(K, batchnorm=True).to(device)
    fn = _past_warmup(methods.build(name, K, model=model))
    out, target = _call_without_sync(fn, images(B, 3, H, W).to(device), _cuda_target(kind, device))
    _assert_result(out, target, device)


# -- the saliency cache (--saliency-source cached): read and write once per step --------------------------


def test_the_saliency_cache_reads_and_writes_on_meta_tensors():
    """``locate``, ``read`` and ``write`` (the cached source's per-step calls) read no value on the host:
    the index check runs on the device and the samples a write touched are stamped without a boolean mask."""
    from salfmix_transforms.saliency_cache import SaliencyCache

    cache = SaliencyCache(10, device=META)
    indices = torch.empty(B, dtype=torch.long, device=META)
    cells = cache.locate(torch.empty(B, 2, H, W, device=META))
    maps = cache.read(indices, cells)
    assert maps.device == META and maps.shape == (B, H, W)
    cache.write(indices, cells, torch.empty(B, H, W, device=META), 1, torch.empty(B, H, W, device=META))
    assert cache.maps.device == META and cache.written_epoch.device == META


def test_the_saliency_cache_makes_no_host_sync_on_cuda(device):
    _cuda_only(device)
    from salfmix_transforms.saliency_cache import SaliencyCache, source_coordinates

    cache = SaliencyCache(10, device=device)
    indices = torch.arange(B, device=device) + 2
    coords = source_coordinates(H, W).to(device).expand(B, -1, -1, -1)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cells = cache.locate(coords)
        cache.write(indices, cells, torch.rand(B, H, W, device=device), 3)
        maps = cache.read(indices, cells)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert cache.written_epoch.tolist() == [-1, -1, 3, 3, 3, 3, -1, -1, -1, -1]
    assert maps.shape == (B, H, W) and bool((maps > 0).all())


def test_the_span_clock_times_cuda_work_without_waiting_for_it(device):
    """The training loop's augmentation timer (``SpanClock``) records CUDA events, never waiting: the work of
    its spans is still queued when the last one ends (sync debug mode does not see
    ``torch.cuda.synchronize``, so the stream's state is what shows a wait)."""
    _cuda_only(device)
    clock, a = SpanClock(device), torch.randn(1024, 1024, device=device)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with clock.span():
                torch.cuda._sleep(50_000_000)  # tens of milliseconds of device time
                a = (a @ a).tanh()
        still_queued = not torch.cuda.current_stream(device).query()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert still_queued, "a span waited for the device"
    torch.cuda.synchronize()
    assert len(clock.events) == 3 and clock.seconds() > 0.0


# -- CUDA: a whole training epoch of train_timm.py (pytest --device cuda) ---------------------------------


def _synchronising_calls_in_each_epoch(monkeypatch, argv: list[str]) -> list[int]:
    """Runs ``train_timm.py`` with ``argv``; the CUDA calls that synchronise during each training epoch: those
    ``torch.cuda.set_sync_debug_mode("warn")`` warns of, and each ``torch.cuda.synchronize``."""
    import warnings

    import train_timm
    from salfmix_transforms import engine

    train_epoch, synchronize, counts = engine.train_epoch, torch.cuda.synchronize, []
    device_waits = [0]

    def counted_synchronize(*args, **kwargs):  # sync debug mode does not see torch.cuda.synchronize
        device_waits[0] += 1
        return synchronize(*args, **kwargs)

    def one_epoch(*args, **kwargs):
        device_waits[0] = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return train_epoch(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
                counts.append(device_waits[0] + sum("synchroniz" in str(w.message) for w in caught))

    with monkeypatch.context() as patch:  # undone after the run: the next run wraps the original again
        patch.setattr(torch.cuda, "synchronize", counted_synchronize)
        patch.setattr(engine, "train_epoch", one_epoch)
        assert train_timm.main(argv) == 0
    return counts


@pytest.mark.parametrize(
    "flags",
    [
        ("--method", "baseline"),
        ("--method", "salfmix", "--salfmix-warmup-epochs", "0"),
        ("--method", "hybridmix-v3", "--salfmix-warmup-epochs", "0", "--saliency-source", "cached"),
    ],
    ids=["baseline", "salfmix-exact", "hybridmix-v3-cached"],
)
def test_a_training_epoch_on_cuda_synchronises_as_often_whatever_its_length(
    device, flags, tiny_folder, tmp_path, monkeypatch
):
    """The CPU run counts the loop's host reads (test_engine.py); here CUDA itself counts the synchronising
    calls of a whole epoch (loader copies, transform, loss, optimizer, cache): 8 batches as many as 2. A
    first run of each batch shape does the one-time set-up (cuDNN, cuBLAS, the allocator) outside the
    comparison."""
    _cuda_only(device)
    from _train_helpers import tiny_args

    def epoch_of(batches: int, name: str) -> list[int]:  # 16 training images
        argv = tiny_args(tiny_folder, tmp_path, name, *flags, "--device", "cuda", "-b", str(16 // batches))
        return _synchronising_calls_in_each_epoch(monkeypatch, argv)

    epoch_of(2, "warm-up-2"), epoch_of(8, "warm-up-8")  # both batch shapes (cuDNN, the allocator)
    two, eight = epoch_of(2, "two"), epoch_of(8, "eight")
    assert len(two) == len(eight) == 1 and eight == two, f"2 batches: {two}, 8 batches: {eight}"
