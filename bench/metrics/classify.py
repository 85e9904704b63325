"""The `classify` metric: which classes a generative model produces (study 001's classifier check).

Study 001 classified generated CIFAR-10 samples with a pretrained DenseNet-121. We download no
weights: the harness trains its own classifier on the dataset's train split, caches it under
`$BENCH_CACHE/classifiers/` keyed by (data fingerprint = sha256 of the training images and labels,
recipe, seed), and records its accuracy on the dataset's own test split with every result.

Recipe: the network and data handling of Keller Jordan's airbench94 (arXiv 2404.00498;
github.com/KellerJordan/cifar10-airbench): a frozen 2x2 patch-whitening convolution initialised
from the eigenvectors of the training patches' covariance, three conv-pool-BN-GELU groups of widths
64/256/256, a max-pool head scaled by 1/9; random flips and 2-px translations, label smoothing 0.2,
SGD with Nesterov momentum, a linear warm-up/decay of the learning rate, flip test-time averaging.
Why this recipe, by accuracy per GPU-minute (cited numbers, single NVIDIA A100, from that
repository's README): airbench94.py reaches 94.01 % in 3.83 s (0.36 PFLOPs), i.e. ~15 training
runs per GPU-minute, where the standard ResNet-18 training reaches 96.0 % in 7 min (32.3 PFLOPs).
A ~2-point accuracy loss buys a >100x cheaper classifier; no GPU measurement of our port exists
yet (no GPU was lent to the session that wrote it). Our port leaves out airbench's Lookahead, its
64x BN-bias learning rate, multi-crop evaluation and alternating flips, so expect a lower accuracy:
the measured test accuracy of the classifier actually used is in every protocol that reports it.

Per entry: the class histogram of N generated samples (argmax of the flip-averaged logits), the
entropy H(p) of the class distribution p (nats; ln K when every class is equally frequent), its KL
divergence to the uniform distribution, KL(p || U) = ln K - H(p), and the mean top-1 softmax
probability (confidence).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import torch
import torch.nn.functional as nnf
from torch import nn

from bench.cache import cache_dir
from bench.errors import BenchError
from bench.images import to_uint8


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The classifier's training recipe (`eval.classifier` overrides any field)."""
    widths: tuple[int, int, int] = (64, 256, 256)
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 0.2                   # peak learning rate (mean loss)
    momentum: float = 0.85
    weight_decay: float = 5e-4
    warmup: float = 0.2               # fraction of the steps with a linear warm-up
    label_smoothing: float = 0.2
    translate: int = 2                # random translation (pixels, reflect-padded)
    seed: int = 0

    def name(self) -> str:
        return "airbench94-port:" + ",".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


class _Group(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out, momentum=0.4), nn.GELU())


class Classifier(nn.Module):
    """airbench94's network: whitening conv, three groups, global max-pool, linear head / 9."""

    def __init__(self, channels: int, n_classes: int, widths=(64, 256, 256)):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels, 1, 1))
        self.register_buffer("std", torch.ones(channels, 1, 1))
        self.whiten = nn.Conv2d(channels, 2 * channels * 4, 2)
        self.whiten.weight.requires_grad_(False)
        self.body = nn.Sequential(nn.GELU(), _Group(2 * channels * 4, widths[0]),
                                  _Group(widths[0], widths[1]), _Group(widths[1], widths[2]),
                                  nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[2], n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        return self.head(self.body(self.whiten((x - self.mean) / self.std))) / 9

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Mean/std from `images` ([0, 1]); whitening filters = eigenvectors / sqrt(eigenvalues)."""
        self.mean.copy_(images.mean(dim=(0, 2, 3)).view(-1, 1, 1))
        self.std.copy_(images.std(dim=(0, 2, 3)).view(-1, 1, 1))
        x = (images - self.mean) / self.std
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)
        values, vectors = torch.linalg.eigh(patches.double().T @ patches.double() / len(patches))
        filters = (vectors.T / (values.clamp(min=0) + eps).sqrt()[:, None]).reshape(c * 4, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).float())
        self.whiten.bias.zero_()


def _augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations by up to `shift` px (reflect padding)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift:
        h, w = x.shape[-2:]
        padded = nnf.pad(x, (shift,) * 4, mode="reflect")
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = padded[..., dy:dy + h, dx:dx + w]
    return x


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up to 1 over `warmup` of the steps, then linear decay to 0."""
    w = max(1, round(warmup * total))
    return (step + 1) / w if step < w else max(0.0, (total - step) / max(1, total - w))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int, recipe: Recipe,
                     device="cpu") -> Classifier:
    """Train on uint8 images [N, C, H, W] with integer labels; deterministic given recipe.seed."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    x_all = images.float() / 255
    model = Classifier(images.shape[1], n_classes, recipe.widths)
    model.init_whitening(x_all[: 5000])
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                          weight_decay=recipe.weight_decay)
    per_epoch = max(1, math.ceil(len(x_all) / recipe.batch_size))
    total, step = recipe.epochs * per_epoch, 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for idx in order.split(recipe.batch_size):
            for group in opt.param_groups:
                group["lr"] = recipe.lr * _lr_factor(step, total, recipe.warmup)
            x = _augment(x_all[idx], recipe.translate, gen).to(device)
            loss = nnf.cross_entropy(model(x), labels[idx].to(device),
                                     label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch: int = 500, device="cpu") -> torch.Tensor:
    """Softmax probabilities (flip-averaged logits) of images in [0, 1] or uint8 [N, C, H, W]."""
    model.eval()
    out = []
    for x in images.split(batch):
        x = x.to(device).float() / (255 if x.dtype == torch.uint8 else 1)
        logits = (model(x) + model(x.flip(-1))) / 2
        out.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(out)


def sample_probs(model: Classifier, samples: torch.Tensor, device="cpu") -> torch.Tensor:
    """Probabilities of generated samples in [-1, 1], quantized exactly as a saved PNG first."""
    return predict(model, to_uint8(samples), device=device)


def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> float:
    return (predict(model, images, device=device).argmax(1) == labels.cpu()).double().mean().item()


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of the training images and labels: the classifier cache key's data part."""
    digest = hashlib.sha256()
    for t in (images, labels.to(torch.int64)):
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def class_stats(probs: torch.Tensor, classes: list[str]) -> dict:
    """Histogram, entropy (nats), KL to uniform and mean top-1 confidence of predictions."""
    k = len(classes)
    counts = torch.bincount(probs.argmax(1), minlength=k).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"classes": list(classes), "counts": [int(c) for c in counts], "n": int(counts.sum()),
            "entropy": entropy, "kl_uniform": math.log(k) - entropy,
            "confidence": probs.max(1).values.double().mean().item()}


def _labelled(dataset) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    labels, classes = getattr(dataset, "train_labels", None), getattr(dataset, "classes", None)
    if labels is None or not classes or getattr(dataset, "heldout_labels", None) is None:
        raise BenchError(f"eval.metrics: 'classify' needs class labels; dataset {dataset.name!r} has "
                         "none (use cifar10 or a folder with one sub-folder per class)")
    return dataset.train, labels, list(classes)


def load_or_train(dataset, recipe: Recipe, device="cpu") -> tuple[Classifier, dict]:
    """The cached classifier of (data fingerprint, recipe, seed), trained and stored if missing."""
    images, labels, classes = _labelled(dataset)
    digest = fingerprint(images, labels)
    key = hashlib.sha256(f"{digest} {recipe.name()}".encode()).hexdigest()[:16]
    path = cache_dir("classifiers") / f"classifier-{key}.pt"
    model = Classifier(images.shape[1], len(classes), recipe.widths)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        return model.to(device).eval(), blob["info"]
    model = train_classifier(images, labels, len(classes), recipe, device)
    acc = accuracy(model, dataset.heldout, dataset.heldout_labels, device)
    info = {"recipe": recipe.name(), "data_fingerprint": digest, "classes": classes,
            "train_images": len(images), "test_images": len(dataset.heldout),
            "test_split": (getattr(dataset, "info", None) or {}).get("split", "held-out"),
            "test_accuracy": acc, "cache": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"state_dict": model.cpu().state_dict(), "info": info}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return model.to(device).eval(), info
