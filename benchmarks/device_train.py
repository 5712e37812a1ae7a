"""The Python side of ``benchmarks/device_check.sh`` (issue 22): the card, part c (a short training run with
the data held on the device) and the report.

    python benchmarks/device_train.py env --device cuda --out DIR/env.json
    python benchmarks/device_train.py train --data-dir DATA --minutes 2 --out DIR/train.json
    python benchmarks/device_train.py train --smoke --out DIR/train.json      # 64 generated images, CPU
    python benchmarks/device_train.py report DIR                              # DIR/device_check.{json,md}

``train``: full-width PreActResNet-18 on an ImageFolder (``train/`` and ``test/``, ``val/`` also accepted),
decoded once into a uint8 tensor on the device; every batch is cropped at random with 4 pixels of zero
padding and flipped on the device. Baseline, Cutout and SalfMix with cached saliency (as ``train_timm.py
--saliency-source cached``: the maps aligned with each view are read from a ``SaliencyCache``, the step's
own backward gives ``x.grad``, ``saliency_from_gradient(x.grad)`` is written back), one seed, the same
number of epochs for every method: as many as fit ``--minutes`` by a short timing of each method's step.
SGD (momentum 0.9, nesterov, weight decay 5e-4, lr 0.1 x batch/128, cosine per step); top-1 error on the
test split at the end. The JSON is rewritten after every method, so a run cut short keeps what it finished.

``report``: gathers ``env.json``, ``runs.tsv`` (one line per command the shell script ran), the
``speed-*.json`` of ``benchmarks/speed.py --json`` and ``train.json`` into ``device_check.json`` and
``device_check.md`` (format: ``tests/test_device_check.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: `report` runs without it (fast, and after a broken install too).

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:  # speed.py stands next to this file
    sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import cpu_name  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10
STD = (0.2470, 0.2435, 0.2616)
PAD = 4
METHODS = ("baseline", "cutout", "salfmix")
METHOD_LABELS = {"baseline": "baseline", "cutout": "Cutout", "salfmix": "SalfMix (cached saliency)"}
STATUSES = ("ok", "partial", "failed", "timeout", "skipped")
# What the report reads of a `speed.py --json` file.
SPEED_KEYS = {"config", "plain_ms", "median_ms", "ratios", "errors"}
PARTS = {
    "tests": "a. tests",
    "speed": "b. step ratios",
    "seg": "b2. segmentation step ratios",
    "train": "c. training",
}
RATIO_ROWS = [
    (method, label, source)
    for method, label in (("salfmix", "SalfMix"), ("hybridmix-v3", "HybridMix v3"))
    for source in ("exact", "cached", "lowres")
]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------------
# env: the card
# ---------------------------------------------------------------------------------------------------------


def _driver_version() -> str | None:
    import torch

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        version = torch._C._cuda_getDriverVersion()  # CUDA driver API version, e.g. 12080
        return f"CUDA driver API {version // 1000}.{version % 1000 // 10}"
    except Exception:
        return None


def _version(package: str) -> str | None:
    """An installed package's version without importing it (timm and torchvision take seconds to import)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    cuda = torch.cuda.is_available()
    device = args.device if cuda or args.device == "cpu" else "cpu"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        card = f"{name} ({memory:.0f} GiB)"
    else:
        card = f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs"
        name = None
    env = {
        "device": device,
        "requested_device": args.device,
        "cuda_available": cuda,
        "gpu": name,
        "card": card,
        "driver": _driver_version() if cuda else None,
        "cuda_runtime": torch.version.cuda,
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    print(
        f"[device-check] card: {card}; driver {env['driver']}, CUDA runtime {env['cuda_runtime']}; "
        f"torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, Python {env['python']}"
    )
    if args.device.startswith("cuda") and not cuda:
        print("[device-check] WARNING: --device cuda asked, but torch sees no CUDA device", file=sys.stderr)
    _write_json(args.out, env)
    return 0


# ---------------------------------------------------------------------------------------------------------
# train: part c
# ---------------------------------------------------------------------------------------------------------


def make_smoke_folder(root: Path, train: int = 64, test: int = 32, size: int = 16, classes: int = 4) -> Path:
    """An ImageFolder of generated PNGs (one colour tint per class, plus noise): train/ and test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            label = i % classes
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            tint = np.array([60 + 40 * label, 200 - 40 * label, 120], dtype=np.float64)
            image = np.clip(tint + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root


def load_folder(root: Path, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of ``root/split/<class>/*`` decoded once: (N, 3, H, W) uint8 and (N,) labels, on device."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    folder = root / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under {folder}")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                images.append(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
                labels.append(label)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"{folder}: images of several sizes {sorted(sizes)[:3]}: resize them first")
    return torch.stack(images).to(device), torch.tensor(labels, device=device), classes


def crop_flip(
    images: torch.Tensor, coords: torch.Tensor, pad: int = PAD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop with ``pad`` pixels of zero padding and a random horizontal flip per sample, on the device.

    ``images`` (B, C, H, W) (uint8) and ``coords`` (B, 2, H, W) (source coordinates, 0 = padding) get the same
    window, so the coordinates say where each pixel of the view came from (``SaliencyCache``).
    """
    import torch
    import torch.nn.functional as F

    batch, _, height, width = images.shape
    device = images.device
    top = torch.randint(0, 2 * pad + 1, (batch,), device=device)
    left = torch.randint(0, 2 * pad + 1, (batch,), device=device)
    flip = torch.rand(batch, device=device) < 0.5
    rows = top[:, None] + torch.arange(height, device=device)  # (B, H)
    cols = left[:, None] + torch.arange(width, device=device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]

    def window(t: torch.Tensor) -> torch.Tensor:
        padded = F.pad(t, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H + 2p, W + 2p, C)
        return padded[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()

    return window(images), window(coords)


def _normalise(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    import torch

    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """One method's model, optimiser, transform and (SalfMix) saliency cache; :meth:`step` is one batch."""

    def __init__(self, method: str, args: argparse.Namespace, data: dict[str, Any], epochs: int) -> None:
        import timm
        import torch

        import salfmix_transforms.models  # noqa: F401  (registers preactresnet18 in timm)
        from salfmix_transforms import methods
        from salfmix_transforms.saliency_cache import SaliencyCache

        self.method, self.args, self.data = method, args, data
        self.device = data["device"]
        torch.manual_seed(args.seed)
        kwargs = {} if args.width == 1.0 else {"width": args.width}
        model = timm.create_model("preactresnet18", num_classes=data["num_classes"], **kwargs)
        self.model = model.to(self.device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        lr = 0.1 * args.batch / 128
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
        )
        total = max(1, epochs * data["steps_per_epoch"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        self.cache = None
        self.warmup_epochs = 0
        if method == "salfmix":
            # Algorithm 2's warm-up epoch when there is room for it (it also fills the cache).
            self.warmup_epochs = 1 if epochs >= 2 else 0
            self.transform = methods.build("salfmix", data["num_classes"], warmup_epochs=self.warmup_epochs)
            self.cache = SaliencyCache(data["train_x"].shape[0], device=self.device)
        else:
            self.transform = methods.build(method, data["num_classes"])
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if args.amp == "bf16"
            else torch.autocast(device_type=self.device.type, enabled=False)
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.transform is not None:
            self.transform.set_epoch(epoch)

    def step(self, index: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        from salfmix_transforms.saliency import saliency_from_gradient

        data = self.data
        raw, coords = crop_flip(data["train_x"][index], data["coords"].expand(index.shape[0], -1, -1, -1))
        x = _normalise(raw, self.args.channels_last)
        y = data["train_y"][index]
        if self.cache is not None:  # train_timm.py --saliency-source cached
            coords = self.cache.locate(coords)  # once for the read and the write, as the engine does
            maps = self.cache.read(index, coords)
            x, y = self.transform(x, y, saliency=maps)
            x.requires_grad_(True)  # the step's backward gives the input gradient too: eq. (2)
        elif self.transform is not None:
            x, y = self.transform(x, y)
        with self.autocast:
            loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        if self.cache is not None:
            self.cache.write(
                index, coords, saliency_from_gradient(x.grad), self.epoch, self.transform.provenance
            )
        return loss.detach()

    def top1_error(self) -> float:
        import torch

        self.model.eval()
        wrong, total = 0, 0
        test_x, test_y = self.data["test_x"], self.data["test_y"]
        for start in range(0, test_x.shape[0], 1000):
            x = _normalise(test_x[start : start + 1000], self.args.channels_last)
            with torch.no_grad(), self.autocast:
                logits = self.model(x)
            wrong += int((logits.argmax(1) != test_y[start : start + 1000]).sum())
            total += x.shape[0]
        self.model.train()
        return 100.0 * wrong / max(1, total)


def _time_steps(trainer: Trainer, steps: int, warmup: int = 3) -> float:
    """Seconds per step of ``trainer`` (after ``warmup`` untimed steps): the epoch planner's estimate."""
    import torch

    data, device = trainer.data, trainer.device
    trainer.set_epoch(max(trainer.warmup_epochs, 0))  # past the warm-up: SalfMix's own cost counts
    n = data["train_x"].shape[0]
    for _ in range(warmup):
        trainer.step(torch.randint(0, n, (trainer.args.batch,), device=device))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(torch.randint(0, n, (trainer.args.batch,), device=device))
    _sync(device)
    return (time.perf_counter() - start) / steps


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    started = time.perf_counter()
    deadline = started + args.deadline_s if args.deadline_s else math.inf
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    record: dict[str, Any] = {
        "status": "running",
        "device": str(device),
        "config": {
            "model": "preactresnet18",
            "width": args.width,
            "batch": args.batch,
            "amp": args.amp,
            "channels_last": args.channels_last,
            "seed": args.seed,
            "minutes": args.minutes,
            "augmentation": f"random crop (padding {PAD}) + horizontal flip, on the device",
            "optimizer": "SGD momentum 0.9 nesterov, wd 5e-4, lr 0.1 x batch/128, cosine per step",
        },
        "methods": {},
    }
    if args.smoke:
        data_dir = make_smoke_folder(args.out.parent / "smoke-data")
    elif args.data_dir is None or not (args.data_dir / "train").is_dir():
        record.update(status="skipped", reason=f"no data set at {args.data_dir} (train/ missing)")
        _write_json(args.out, record)
        print(f"[device-check] training skipped: {record['reason']}")
        return 0
    else:
        data_dir = args.data_dir
    test_split = next((s for s in ("test", "val") if (data_dir / s).is_dir()), None)
    if test_split is None:
        record.update(status="skipped", reason=f"{data_dir} has no test/ or val/ split")
        _write_json(args.out, record)
        return 0
    from salfmix_transforms.saliency_cache import source_coordinates

    t0 = time.perf_counter()
    train_x, train_y, classes = load_folder(data_dir, "train", device)
    test_x, test_y, test_classes = load_folder(data_dir, test_split, device)
    if test_classes != classes:
        raise ValueError(f"train/ and {test_split}/ have other classes")
    height, width = train_x.shape[2:]
    if args.batch > train_x.shape[0]:
        raise ValueError(f"--batch {args.batch} is larger than the training set ({train_x.shape[0]})")
    data = {
        "device": device,
        "train_x": train_x,
        "train_y": train_y,
        "test_x": test_x,
        "test_y": test_y,
        "num_classes": len(classes),
        "steps_per_epoch": train_x.shape[0] // args.batch,  # the last incomplete batch is dropped
        "coords": source_coordinates(height, width).to(device).unsqueeze(0),
    }
    record["data"] = {
        "dir": str(data_dir),
        "generated": bool(args.smoke),
        "train": int(train_x.shape[0]),
        "test": int(test_x.shape[0]),
        "test_split": test_split,
        "classes": len(classes),
        "size": [int(height), int(width)],
        "decode_s": round(time.perf_counter() - t0, 2),
        "steps_per_epoch": data["steps_per_epoch"],
    }
    print(f"[device-check] data: {record['data']}")

    # Plan: the same number of epochs for every method, as many as fit --minutes.
    if args.epochs:
        epochs = args.epochs
        record["plan"] = {"epochs": epochs, "how": "--epochs"}
    else:
        t0 = time.perf_counter()
        per_step = {}
        for method in METHODS:
            per_step[method] = _time_steps(
                Trainer(method, args, data, 1), steps=min(10, data["steps_per_epoch"])
            )
        per_epoch = {m: s * data["steps_per_epoch"] for m, s in per_step.items()}
        budget = args.minutes * 60.0 - (time.perf_counter() - t0)
        if math.isfinite(deadline):
            budget = min(budget, deadline - time.perf_counter() - 10.0)
        epochs = max(1, min(args.max_epochs, int(budget / (1.08 * sum(per_epoch.values())))))
        record["plan"] = {
            "epochs": epochs,
            "how": "--minutes",
            "estimated_s_per_epoch": {m: round(s, 3) for m, s in per_epoch.items()},
            "calibration_s": round(time.perf_counter() - t0, 2),
        }
    print(f"[device-check] plan: {record['plan']}")
    _write_json(args.out, record)

    truncated = False
    for method in METHODS:
        trainer = Trainer(method, args, data, epochs)
        epoch_times = []
        n = train_x.shape[0]
        for epoch in range(epochs):
            if time.perf_counter() > deadline - 5.0:
                truncated = True
                break
            trainer.set_epoch(epoch)
            _sync(device)
            t0 = time.perf_counter()
            order = torch.randperm(n, device=device)
            loss = torch.zeros((), device=device)
            for i in range(data["steps_per_epoch"]):
                loss = trainer.step(order[i * args.batch : (i + 1) * args.batch])
            _sync(device)
            epoch_times.append(time.perf_counter() - t0)
        error = trainer.top1_error() if epoch_times else None  # no epoch left before the deadline: not run
        record["methods"][method] = {
            "label": METHOD_LABELS[method],
            "top1_error": None if error is None else round(error, 2),
            "s_per_epoch": round(sum(epoch_times) / len(epoch_times), 3) if epoch_times else None,
            "epochs": len(epoch_times),
            "final_loss": round(float(loss), 4) if epoch_times else None,
            "warmup_epochs": trainer.warmup_epochs,
        }
        print(f"[device-check] {method}: {record['methods'][method]}")
        _write_json(args.out, record)
    record["status"] = "partial" if truncated else "ok"
    record["seconds"] = round(time.perf_counter() - started, 2)
    _write_json(args.out, record)
    return 0


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _number(text: str, kind: type) -> Any:
    """A number of ``runs.tsv``, ``None`` for ``-``, an empty field or a damaged one."""
    try:
        return kind(text)
    except ValueError:
        return None


def _read_runs(path: Path) -> list[dict[str, Any]]:
    """``runs.tsv``: part, name, status, rc, seconds, budget, log, command (one line per command run)."""
    runs = []
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 8:
            continue
        part, name, status, rc, seconds, budget, log, command = fields[:8]
        runs.append(
            {
                "part": part,
                "name": name,
                "status": status if status in STATUSES else "failed",  # a damaged line: not a success
                "rc": _number(rc, int),
                "seconds": _number(seconds, float) or 0.0,
                "budget_s": _number(budget, float),
                "log": log or None,
                "command": command,
                "reason": fields[8] if len(fields) > 8 and fields[8] else None,
            }
        )
    return runs


def _pytest_summary(log: Path) -> tuple[str | None, dict[str, int]]:
    """The last ``N passed, M failed ... in Xs`` line of a pytest log, and its counts."""
    import re

    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None, {}
    for line in reversed(lines):
        counts = dict(
            (word, int(number))
            for number, word in re.findall(
                r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", line
            )
        )
        if counts:
            counts = {("error" if k == "errors" else k): v for k, v in counts.items()}
            return line.strip("= ").strip(), counts
    return (lines[-1].strip() if lines else None), {}


def _part_seconds(runs: list[dict[str, Any]]) -> float:
    return round(sum(r["seconds"] for r in runs), 1)


def _part_status(statuses: list[str]) -> str:
    if not statuses:
        return "skipped"
    if all(s == "ok" for s in statuses):
        return "ok"
    if all(s == "skipped" for s in statuses):
        return "skipped"
    if any(s == "ok" for s in statuses):
        return "partial"
    return "timeout" if all(s in ("timeout", "skipped") for s in statuses) else "failed"


def _add_speed_json(entry: dict[str, Any], out: Path, name: str) -> None:
    """Add the numbers of a ``speed.py --json`` file to the report entry of its run (if the run wrote it);
    a run that finished with a candidate missing becomes ``partial``."""
    if not (out / name).exists():
        return
    result = _read_json(out / name)
    if not isinstance(result, dict) or not SPEED_KEYS <= set(result):
        entry.update(status="failed", reason=f"{name} unreadable (truncated, or not speed.py's JSON)")
        return
    entry.update(
        json=name,
        config=result["config"],
        plain_ms=result["plain_ms"],
        median_ms=result["median_ms"],
        ratios=result["ratios"],
        ratio_intervals=result.get("ratio_intervals"),
        errors=result["errors"],
    )
    if entry["status"] == "ok" and any(v is None for r in result["ratios"].values() for v in r.values()):
        entry["status"] = "partial"


def _seg_part(out: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Part b2: the run of ``speed.py --task seg`` (section 5, ``train_seg.py``'s step) and its JSON."""
    part: dict[str, Any] = {
        "status": _part_status([r["status"] for r in runs]),
        "seconds": _part_seconds(runs),
    }
    if not runs:
        return part
    run = runs[-1]
    part.update(command=run["command"], budget_s=run["budget_s"], log=run["log"], reason=run["reason"])
    _add_speed_json(part, out, "seg.json")
    return part


def build_report(out: Path) -> dict[str, Any]:
    meta = _read_json(out / "meta.json") or {}
    env = _read_json(out / "env.json") or {"card": "unknown (env step failed)"}
    runs = _read_runs(out / "runs.tsv")
    by_part: dict[str, list[dict[str, Any]]] = {
        part: [r for r in runs if r["part"] == part] for part in PARTS
    }
    parts: dict[str, dict[str, Any]] = {}

    # a. tests
    tests = by_part["tests"]
    part: dict[str, Any] = {
        "status": _part_status([r["status"] for r in tests]),
        "seconds": _part_seconds(tests),
    }
    if tests:
        run = tests[-1]
        summary, counts = _pytest_summary(out / run["log"]) if run["log"] else (None, {})
        part.update(
            command=run["command"],
            budget_s=run["budget_s"],
            rc=run["rc"],
            log=run["log"],
            summary=summary,
            counts=counts,
            reason=run["reason"],
        )
    parts["tests"] = part

    # b. step ratios
    speed_runs = []
    for run in by_part["speed"]:
        # name: <size>px-<eager|compile>
        size, _, mode = run["name"].partition("px-")
        entry: dict[str, Any] = {
            "name": run["name"],
            "size": int(size),
            "compile": mode == "compile",
            "status": run["status"],
            "seconds": run["seconds"],
            "budget_s": run["budget_s"],
            "log": run["log"],
            "reason": run["reason"],
        }
        _add_speed_json(entry, out, f"speed-{run['name']}.json")
        speed_runs.append(entry)
    parts["speed"] = {
        "status": _part_status([r["status"] for r in speed_runs]),
        "seconds": _part_seconds(by_part["speed"]),
        "config": meta.get("speed"),
        "runs": speed_runs,
    }

    # b2. segmentation step ratios (speed.py section 5)
    parts["seg"] = _seg_part(out, by_part["seg"])

    # c. training
    train_runs = by_part["train"]
    train = _read_json(out / "train.json")
    part = {"status": _part_status([r["status"] for r in train_runs]), "seconds": _part_seconds(train_runs)}
    if train_runs:
        run = train_runs[-1]
        part.update(command=run["command"], budget_s=run["budget_s"], log=run["log"], reason=run["reason"])
    if train is not None:
        if train.get("status") in ("skipped", "partial"):
            part["status"] = train["status"] if part["status"] == "ok" else part["status"]
        if train.get("status") == "running" and train.get("methods"):
            part["status"] = "partial"
        part.update({k: v for k, v in train.items() if k not in ("status", "seconds")})
        part["train_status"] = train.get("status")
    parts["train"] = part

    return {
        "schema": "device-check/1",
        "smoke": bool(meta.get("smoke")),
        "started_at": meta.get("started_at"),
        "wall_s": meta.get("wall_s"),
        "budget_s": meta.get("budget_s"),
        "env": env,
        "parts": parts,
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _value_cell(run: dict[str, Any], value: float | None, spec: str, suffix: str) -> str:
    """A number of a timed run, ``error`` where it has none, the run's status where it did not finish."""
    if "ratios" not in run:
        return run["status"]
    return "error" if value is None else f"{value:{spec}}{suffix}"


def _ratio_cell(run: dict[str, Any], method: str, source: str) -> str:
    """``1.07x (1.05-1.09)``: the paired median ratio and its 95 % interval (when the run has it)."""
    text = _value_cell(run, run.get("ratios", {}).get(method, {}).get(source), ".2f", "x")
    interval = ((run.get("ratio_intervals") or {}).get(method) or {}).get(source)
    if not text.endswith("x") or interval is None:
        return text
    return f"{text} ({interval[0]:.2f}-{interval[1]:.2f})"


def _ratio_table(columns: list[str], runs: list[dict[str, Any]]) -> list[str]:
    """The lines of a table with one column per run: the plain step's time, then a row per method and
    saliency source (:data:`RATIO_ROWS`)."""
    header = ["method", "saliency source", *columns]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * len(runs)]
    plain = [_value_cell(r, r.get("plain_ms"), ".2f", "") for r in runs]
    lines.append("| plain step (ms) | - | " + " | ".join(plain) + " |")
    for method, label, source in RATIO_ROWS:
        lines.append(
            f"| {label} | {source} | " + " | ".join(_ratio_cell(r, method, source) for r in runs) + " |"
        )
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    env, parts = report["env"], report["parts"]
    lines = [
        "# Device check" + (" (--smoke)" if report["smoke"] else ""),
        "",
        f"Card: {env.get('card')}; driver {env.get('driver')}, CUDA runtime {env.get('cuda_runtime')}; torch "
        f"{env.get('torch')}, torchvision {env.get('torchvision')}, timm {env.get('timm')}, Python "
        f"{env.get('python')}. Started {report['started_at']}, {_fmt(report['wall_s'], '.0f', ' s')} in all "
        f"(budget {_fmt(report['budget_s'], '.0f', ' s')}).",
        "",
        "| part | status | seconds | detail |",
        "| --- | --- | ---: | --- |",
    ]
    tests = parts["tests"]
    detail = tests.get("summary") or tests.get("reason") or ""
    lines.append(f"| {PARTS['tests']} | {tests['status']} | {tests['seconds']:.0f} | {detail} |")
    speed = parts["speed"]
    done = sum(r["status"] in ("ok", "partial") for r in speed["runs"])
    lines.append(
        f"| {PARTS['speed']} | {speed['status']} | {speed['seconds']:.0f} | {done}/{len(speed['runs'])} "
        "configurations timed |"
    )
    seg = parts["seg"]
    detail = "tinyseg step timed" if "ratios" in seg else (seg.get("reason") or "")
    lines.append(f"| {PARTS['seg']} | {seg['status']} | {seg['seconds']:.0f} | {detail} |")
    train = parts["train"]
    if train.get("methods"):
        epochs = train.get("plan", {}).get("epochs", "?")
        detail = (
            f"{epochs} epoch{'' if epochs == 1 else 's'} per method on {train.get('data', {}).get('dir')}"
        )
    else:
        detail = train.get("reason") or ""
    lines.append(f"| {PARTS['train']} | {train['status']} | {train['seconds']:.0f} | {detail} |")

    lines += ["", "## b. Step time over the plain step", ""]
    runs = speed["runs"]
    if runs:
        config = speed.get("config") or {}
        lines.append(
            f"PreActResNet-18 width {config.get('width')}, batch {config.get('batch')}, "
            f"{config.get('amp') or 'fp32'} autocast, channels_last {config.get('channels_last')}; median of "
            f"{config.get('repeats')} steps per candidate, round-robin (`benchmarks/speed.py --sections 4`). "
            "A cell is the SalfMix / HybridMix v3 step time divided by the plain step's of the same round, "
            "the median over the rounds with its 95 % interval, both in the same configuration (compile: "
            "`torch.compile(model)` on both sides); `timeout`, `failed`: the run did not finish, see its log."
        )
        lines.append("")
        columns = [f"{r['size']}px {'compile' if r['compile'] else 'eager'}" for r in runs]
        lines += _ratio_table(columns, runs)
    else:
        lines.append("Not run.")

    lines += ["", "## b2. Segmentation step over the plain step", ""]
    seg = parts["seg"]
    if "ratios" in seg:
        config = seg.get("config") or {}
        height, width = config.get("size") or ("?", "?")
        lines.append(
            f"`train_seg.py`'s step: tinyseg, batch {config.get('batch')} at {height}x{width}, "
            f"{config.get('classes')} classes, fp32, channels_last {config.get('channels_last')}; median of "
            f"{config.get('repeats')} steps per candidate, round-robin (`benchmarks/speed.py --task seg`, "
            "section 5). A cell as in b. Targets (issue 22): cached <= 1.10x, lowres <= 1.30x."
        )
        lines.append("")
        lines += _ratio_table([f"tinyseg {height}x{width}"], [seg])
    else:
        reason = f" ({seg['reason']})" if seg.get("reason") else ""
        lines.append(f"Not timed: {seg['status']}{reason}.")

    lines += ["", "## c. Training", ""]
    if train.get("methods"):
        data = train.get("data", {})
        config = train.get("config", {})
        lines.append(
            f"PreActResNet-18 width {config.get('width')}, batch {config.get('batch')}, "
            f"{config.get('amp') or 'fp32'}, channels_last {config.get('channels_last')}; "
            f"{data.get('train')} training / {data.get('test')} test images ({data.get('classes')} classes, "
            f"{'generated' if data.get('generated') else data.get('dir')}), data on the device; one seed; "
            f"top-1 error on the {data.get('test_split')} split after the last epoch."
        )
        lines += ["", "| method | top-1 error (%) | s / epoch | epochs |", "| --- | ---: | ---: | ---: |"]
        for method in METHODS:
            result = train["methods"].get(method)
            if result is None:
                lines.append(f"| {METHOD_LABELS[method]} | not run | n/a | 0 |")
                continue
            error = _fmt(result["top1_error"], ".2f") if result["epochs"] else "not trained (deadline)"
            lines.append(
                f"| {result['label']} | {error} | {_fmt(result['s_per_epoch'], '.3f')} | {result['epochs']} |"
            )
    else:
        lines.append(f"Not run: {train.get('reason') or train['status']}.")
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        print(
            f"device_train.py report: error: no such folder {args.dir} (the --out of a device check)",
            file=sys.stderr,
        )
        return 2
    report = build_report(args.dir)
    _write_json(args.dir / "device_check.json", report)
    markdown = report_markdown(report)
    (args.dir / "device_check.md").write_text(markdown)
    print(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    env = sub.add_parser("env", help="print and record the card, driver and versions")
    env.add_argument("--device", default="cuda")
    env.add_argument("--out", type=Path, required=True)

    train = sub.add_parser(
        "train", help="part c: baseline / Cutout / SalfMix (cached) with the data on the device"
    )
    train.add_argument(
        "--data-dir", type=Path, help="ImageFolder with train/ and test/ (skipped when absent)"
    )
    train.add_argument("--smoke", action="store_true", help="64 generated 16 px images instead of --data-dir")
    train.add_argument("--out", type=Path, required=True, help="the JSON to write")
    train.add_argument("--device", help="default: cuda when available, else cpu")
    train.add_argument("--width", type=float, default=1.0)
    train.add_argument("--batch", type=int, default=128)
    train.add_argument("--amp", choices=("bf16",))
    train.add_argument("--channels-last", action="store_true")
    train.add_argument("--minutes", type=float, default=2.0, help="training budget for the three methods")
    train.add_argument("--epochs", type=int, help="fixed epochs per method instead of --minutes")
    train.add_argument("--max-epochs", type=int, default=200)
    train.add_argument("--deadline-s", type=float, help="stop epochs this many seconds after the start")
    train.add_argument("--threads", type=int)
    train.add_argument("--seed", type=int, default=0)

    report = sub.add_parser("report", help="device_check.json and device_check.md from a run folder")
    report.add_argument("dir", type=Path)

    args = parser.parse_args(argv)
    return {"env": cmd_env, "train": cmd_train, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
