"""Tests of ``salfmix_transforms.saliency`` (gradient saliency, eq. (2)-(3) of Choi et al. 2021)."""

from __future__ import annotations

import contextlib
import copy
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from salfmix_transforms.saliency import gradient_saliency, preserved_model_state

NUM_CLASSES = 5
BATCH = 6


class TinyNet(nn.Module):
    """conv - BN - ReLU - max-pool - linear on 3x12x12 images, 5 classes."""

    def __init__(self, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6) if batch_norm else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 6 * 6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(F.relu(self.bn(self.conv(x)))).flatten(1))


def make_model(batch_norm: bool = True, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet(batch_norm)
    if batch_norm:
        # Running statistics far from the batch ones, so that train and eval mode differ.
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
            model.bn.num_batches_tracked.fill_(7)
    return model


def make_batch(seed: int = 1, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 12, 12, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return x, y


def snapshot(model: nn.Module) -> dict[str, dict[str, object]]:
    return {
        "flags": {name: m.training for name, m in model.named_modules()},
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["flags"] == before["flags"]
    assert after["buffers"].keys() == before["buffers"].keys()
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name
    for name, value in before["grads"].items():
        if value is None:
            assert after["grads"][name] is None, name
        else:
            assert torch.equal(after["grads"][name], value), name


def ce_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, reduction="sum")


def reference_per_sample(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, train: bool
) -> torch.Tensor:
    """Slow reference: one image at a time, ``loss.backward()`` on a copy, max |x.grad| over channels."""
    ref = copy.deepcopy(model).train(train)
    maps = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        ce_sum(ref(xi), target[i : i + 1]).backward()
        maps.append(xi.grad.abs().amax(dim=1)[0])
    return torch.stack(maps)


def reference_whole_batch(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Slow reference in train mode: one forward of the batch, summed loss, ``.backward()`` on a copy."""
    ref = copy.deepcopy(model).train()
    xb = x.clone().requires_grad_(True)
    ce_sum(ref(xb), target).backward()
    return xb.grad.abs().amax(dim=1)


# ----------------------------------------------------------------------------------------------- values


def test_eval_mode_equals_per_sample_reference():
    model = make_model()
    x, y = make_batch()
    out = gradient_saliency(model, x, y, mode="eval")
    assert out.shape == (BATCH, 12, 12) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, reference_per_sample(model, x, y, train=False))


def test_train_mode_equals_whole_batch_reference():
    # In train mode BatchNorm normalises with the batch's statistics, so every image's gradient depends on
    # the other images: a per-sample batch-of-1 loop would compute another quantity (and BN needs more than
    # one value per channel). The reference is therefore one summed-loss backward over the whole batch.
    model = make_model()
    x, y = make_batch()
    out = gradient_saliency(model, x, y)  # mode="train" is the default
    torch.testing.assert_close(out, reference_whole_batch(model, x, y))
    # Train and eval mode really differ here (running statistics are not the batch ones).
    assert not torch.allclose(out, gradient_saliency(model, x, y, mode="eval"))


def test_train_mode_without_batch_norm_equals_per_sample_reference():
    # Without BatchNorm nothing couples the samples: the summed loss gives each image its own gradient.
    model = make_model(batch_norm=False)
    x, y = make_batch()
    out = gradient_saliency(model, x, y, mode="train")
    torch.testing.assert_close(out, reference_per_sample(model, x, y, train=True))


def test_map_is_max_over_channels_of_abs_gradient():
    # Eq. (3) on a model whose input gradient is known: logits = W @ x.flatten(), so dCE/dx = W^T (p - y).
    torch.manual_seed(3)
    linear = nn.Linear(3 * 4 * 4, NUM_CLASSES, bias=False)
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.randn(2, 3, 4, 4)
    y = torch.tensor([1, 4])
    p = torch.softmax(model(x), dim=1).detach()
    grad = ((p - F.one_hot(y, NUM_CLASSES).float()) @ linear.weight.detach()).view(2, 3, 4, 4)
    torch.testing.assert_close(gradient_saliency(model, x, y), grad.abs().amax(dim=1))


def test_soft_one_hot_targets_equal_indices():
    model = make_model()
    x, y = make_batch()
    soft = F.one_hot(y, NUM_CLASSES).float()
    for mode in ("train", "eval"):
        torch.testing.assert_close(
            gradient_saliency(model, x, soft, mode=mode), gradient_saliency(model, x, y, mode=mode)
        )


def test_soft_targets_equal_reference():
    model = make_model()
    x, _ = make_batch()
    soft = torch.softmax(torch.randn(BATCH, NUM_CLASSES, generator=torch.Generator().manual_seed(5)), 1)
    torch.testing.assert_close(
        gradient_saliency(model, x, soft, mode="eval"), reference_per_sample(model, x, soft, train=False)
    )


def test_channels_last_input_gives_same_map():
    model = make_model()
    x, y = make_batch()
    x_cl = x.to(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()
    for mode in ("train", "eval"):
        out = gradient_saliency(model, x_cl, y, mode=mode)
        assert out.shape == (BATCH, 12, 12) and out.is_contiguous()
        torch.testing.assert_close(out, gradient_saliency(model, x, y, mode=mode))


def test_cpu_bf16_autocast_gives_float32_map_close_to_fp32():
    model = make_model()
    x, y = make_batch(batch=8)
    reference = gradient_saliency(model, x, y, mode="eval")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gradient_saliency(model, x, y, mode="eval")
    assert out.shape == (8, 12, 12) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # bf16 keeps ~3 significant digits: near-ties may flip, but the most salient pixel mostly agrees.
    agree = (out.flatten(1).argmax(1) == reference.flatten(1).argmax(1)).sum().item()
    assert agree >= 5, agree


def test_non_finite_gradients_are_returned_as_they_are():
    model = make_model(batch_norm=False)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("inf")
    x, y = make_batch()
    out = gradient_saliency(model, x, y)
    assert not torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ state


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_state_is_left_unchanged(mode):
    model = make_model()
    model.train()
    model.pool.eval()  # a mixed pattern of flags: each module's own flag must come back
    model.conv.weight.grad = torch.randn_like(model.conv.weight)  # an existing grad stays equal
    before = snapshot(model)
    x, y = make_batch()
    out = gradient_saliency(model, x, y, mode=mode)
    assert_same_state(before, snapshot(model))
    assert out.grad_fn is None and not out.requires_grad
    assert not x.requires_grad and x.grad is None


def test_model_in_eval_with_a_submodule_in_train_is_left_unchanged():
    model = make_model()
    model.eval()
    model.bn.train()
    before = snapshot(model)
    gradient_saliency(model, *make_batch(), mode="train")
    assert_same_state(before, snapshot(model))


def test_an_unpreserved_train_pass_would_change_the_buffers():
    # Guard for the test above: a plain train-mode forward does change the BatchNorm buffers.
    model = make_model()
    before = snapshot(model)
    model.train()(make_batch()[0])
    assert not torch.equal(model.bn.running_mean, before["buffers"]["bn.running_mean"])
    assert int(model.bn.num_batches_tracked) == int(before["buffers"]["bn.num_batches_tracked"]) + 1


def test_works_under_no_grad():
    model = make_model()
    x, y = make_batch()
    expected = gradient_saliency(model, x, y)
    before = snapshot(model)
    with torch.no_grad():
        out = gradient_saliency(model, x, y)
        assert not torch.is_grad_enabled()  # the caller's grad mode is back
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad
    assert_same_state(before, snapshot(model))


def test_inference_mode_raises():
    model = make_model()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        gradient_saliency(model, *make_batch())


def test_state_restored_when_the_forward_raises():
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            self.bn(x)  # updates the running statistics first
            raise RuntimeError("boom")

    model = Failing().eval()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        gradient_saliency(model, *make_batch())
    assert_same_state(before, snapshot(model))


def test_preserved_model_state_restores_flags_and_buffers():
    model = make_model().eval()
    model.fc.train()
    before = snapshot(model)
    original_mean = model.bn.running_mean
    with preserved_model_state(model) as root:
        assert root is model
        model.train()
        model.bn.running_var.mul_(3.0)
        model.bn.running_mean = torch.zeros(6)  # replaced by a new tensor: the original object comes back
        model(make_batch()[0])
    assert model.bn.running_mean is original_mean
    assert_same_state(before, snapshot(model))
    with pytest.raises(TypeError, match="model"):
        with preserved_model_state("not a model"):
            pass


# -------------------------------------------------------------------------------------- DDP and compile


@contextlib.contextmanager
def gloo_group():
    """A one-process gloo group on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTER_ADDR", "127.0.0.1")
        mp.setenv("MASTER_PORT", str(port))
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def forbid_ddp_forward(ddp: DistributedDataParallel):
    """DDP's forward broadcasts buffers and arms the reducer for a backward: it must never run."""

    def forbidden(*args, **kwargs):
        raise AssertionError("DistributedDataParallel.forward was called")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ddp, "forward", forbidden)
        yield


def test_ddp_model_is_unwrapped():
    model = make_model()
    x, y = make_batch()
    expected = {mode: gradient_saliency(model, x, y, mode=mode) for mode in ("train", "eval")}
    with gloo_group():
        ddp = DistributedDataParallel(model)
        before = snapshot(ddp)
        with forbid_ddp_forward(ddp):
            for mode in ("train", "eval"):
                torch.testing.assert_close(gradient_saliency(ddp, x, y, mode=mode), expected[mode])
            assert_same_state(before, snapshot(ddp))
            # torch.compile(DDP(m)) cannot be called without running DDP: the inner module runs eagerly.
            compiled_ddp = torch.compile(ddp, backend="aot_eager")
            torch.testing.assert_close(gradient_saliency(compiled_ddp, x, y), expected["train"])
            assert_same_state(before, snapshot(ddp))
        # The reducer was left alone: an ordinary DDP training step still works and fills the grads.
        ce_sum(ddp(x), y).backward()
        assert all(p.grad is not None for p in ddp.parameters())


def test_compiled_model_gives_same_map():
    from torch._dynamo.testing import CompileCounterWithBackend

    model = make_model()
    x, y = make_batch()
    expected = {mode: gradient_saliency(model, x, y, mode=mode) for mode in ("train", "eval")}
    # aot_eager traces forward and backward through AOTAutograd (what inductor gets) but runs them eagerly:
    # it checks the compiled path in a fraction of a second, where inductor would spend many seconds
    # generating and building C++ kernels on CPU.
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter)
    before = snapshot(model)
    for mode in ("train", "eval"):
        torch.testing.assert_close(
            gradient_saliency(compiled, x, y, mode=mode), expected[mode], rtol=1e-4, atol=1e-6
        )
    assert counter.frame_count >= 1  # the compiled forward was used
    assert_same_state(before, snapshot(model))
    # DDP around a compiled module: DDP is stepped over, the compiled forward is kept.
    frames = counter.frame_count
    with gloo_group():
        ddp = DistributedDataParallel(compiled)
        with forbid_ddp_forward(ddp):
            torch.testing.assert_close(gradient_saliency(ddp, x, y), expected["train"], rtol=1e-4, atol=1e-6)
        assert counter.frame_count == frames  # the same compiled graph ran again, no recompile
        assert_same_state(before, snapshot(model))


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": [[1.0]]}, TypeError, "^x must be a torch.Tensor"),
        ({"x": torch.zeros(3, 12, 12)}, ValueError, "^x must be a 4-D"),
        ({"x": torch.zeros(BATCH, 3, 12, 12, dtype=torch.uint8)}, TypeError, "^x must be a floating"),
        ({"target": torch.zeros(BATCH + 1, dtype=torch.long)}, ValueError, "^target has 7 labels"),
        ({"target": torch.zeros(BATCH)}, TypeError, "^target of shape \\(B,\\) must hold integer"),
        (
            {"target": torch.full((BATCH, NUM_CLASSES + 1), 1 / (NUM_CLASSES + 1))},
            ValueError,
            "^target has 6 columns",
        ),
        ({"target": torch.full((BATCH,), NUM_CLASSES)}, ValueError, "^target holds class indices"),
        ({"mode": "test"}, ValueError, "^mode must be one of"),
        ({"mode": None}, ValueError, "^mode must be one of"),
        ({"model": lambda x: x}, TypeError, "^model must be a torch.nn.Module"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = make_batch()
    args = {"model": make_model(), "x": x, "target": y, "mode": "train"} | kwargs
    with pytest.raises(error, match=match):
        gradient_saliency(args["model"], args["x"], args["target"], mode=args["mode"])


def test_model_must_return_logits():
    x, y = make_batch()

    class TupleOut(TinyNet):
        def forward(self, x):
            return super().forward(x), x

    with pytest.raises(TypeError, match=r"^model must return a tensor"):
        gradient_saliency(TupleOut(), x, y)
    with pytest.raises(ValueError, match=r"^model must return logits"):
        gradient_saliency(nn.Identity(), x, y)

    class Detaches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(432, NUM_CLASSES)

        def forward(self, x):
            return self.fc(x.detach().flatten(1))

    # The loss depends on the parameters only, or on nothing that requires grad at all.
    for model in (Detaches(), Detaches().requires_grad_(False)):
        with pytest.raises(RuntimeError, match="does not depend on x"):
            gradient_saliency(model, x, y)
