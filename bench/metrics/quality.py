"""Quality metrics of a run under a pinned protocol: the evaluation hook of `bench.run.runner`.

`METRICS` is the closed set a suite's `eval.metrics` picks from: `fid` (Heusel et al. 2017), `kid`
(Binkowski et al. 2018), `pr` (precision/recall, Kynkäänniemi et al. 2019) — all from the TF-Inception
pool3 features of `bench.metrics.inception` — and `recon` / `roundtrip` (SSIM and PSNR of one-step
x̂0 and of DDIM encode->decode round trips against held-out images, study 003's table).

Samples go straight from the sampler into the feature extractor (quantized to uint8 exactly as a
saved PNG, no files written). Reference statistics are cached by (dataset, split, N, resolution,
weights sha256, preprocessing). Every result records its `protocol` and `protocol_key`; the
leaderboard never ranks rows whose keys differ.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from bench.images import to_uint8
from bench.metrics import fid as F
from bench.metrics.hook import EvalContext
from bench.metrics.inception import PREPROCESSING, extract_features, load_inception
from bench.metrics.sampling import sample
from bench.metrics.ssim import reconstruction_metrics, roundtrip_metrics
from bench.samplers import resolve_steps

METRICS = {"fid": "Fréchet Inception distance", "kid": "kernel Inception distance (mean ± std)",
           "pr": "precision and recall (k-NN manifolds)", "recon": "SSIM/PSNR of one-step x̂0 vs t",
           "roundtrip": "SSIM/PSNR of DDIM encode->decode vs t",
           "classify": "class histogram of samples by a harness-trained classifier (bench.metrics.classify)"}
FEATURE_METRICS = {"fid", "kid", "pr"}


class QualityHook:
    """hook(phase, ctx) (`bench.metrics.hook`): FID proxy during training; the requested metrics
    at the end, with the protocol they were measured under written into `ctx.record`."""

    def __init__(self, spec, inception: tuple | None = None):
        self.spec, self.cfg = spec, spec.eval
        self._inception = inception  # (module, sha256) to share a loaded network, else loaded lazily

    def __call__(self, phase: str, ctx: EvalContext) -> dict:
        if phase == "train":
            if not self.cfg.fid_proxy_n:
                return {}
            steps = self.cfg.fid_proxy_steps or self.cfg.steps
            feats = self.generated_features(ctx, self.cfg.fid_proxy_n, steps)
            return {"fid_proxy": F.fid_from_features(feats, self.reference(ctx, stats=True))}
        out = {}
        if FEATURE_METRICS & set(self.cfg.metrics):
            out.update(self.feature_metrics(ctx))
        if "recon" in self.cfg.metrics:
            out.update(self.recon(ctx, reconstruction_metrics, "recon", "", {}))
        if "roundtrip" in self.cfg.metrics:
            out.update(self.recon(ctx, roundtrip_metrics, "roundtrip", "roundtrip_",
                                  {"steps": self.cfg.roundtrip_steps}))
        return out

    # -- Inception features --------------------------------------------------------------------
    def inception(self, device):
        if self._inception is None:
            self._inception = load_inception(self.cfg.inception_weights, device)
        return self._inception

    def sample_batches(self, ctx: EvalContext, n: int, steps):
        """(offset, samples in [-1, 1]) of the seeded stream FID scores, one sampling batch at a time."""
        cfg = dataclasses.replace(self.cfg, steps=steps)
        for i, start in enumerate(range(0, n, self.cfg.sample_batch)):
            b = min(self.cfg.sample_batch, n - start)
            yield start, sample(ctx.net_for_sampling(b, start), ctx.diffusion, cfg, b, ctx.shape,
                                seed=sample_seed(self.cfg.fid_seed, i), amp=ctx.amp,
                                device=ctx.device)

    def generated_features(self, ctx: EvalContext, n: int, steps) -> np.ndarray:
        """Features of `n` samples drawn batch by batch from one seeded stream (fid_seed)."""
        module, _ = self.inception(ctx.device)
        return np.concatenate([extract_features(module, to_uint8(x), self.cfg.fid_batch, ctx.device)
                               for _, x in self.sample_batches(ctx, n, steps)])

    def reference_key(self, ctx: EvalContext) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self.spec.data).items() if k != "flip"}
        images = self.reference_images(ctx)
        _, sha = self.inception(ctx.device)
        return {"dataset": json.dumps(data, sort_keys=True), "split": self.cfg.fid_reference,
                "n": len(images), "resolution": self.spec.data.image_size,
                "weights_sha256": sha, "preprocessing": PREPROCESSING}

    def reference_images(self, ctx: EvalContext) -> torch.Tensor:
        dataset = ctx.dataset
        images = dataset.train if self.cfg.fid_reference == "train" else dataset.heldout
        return images[: self.cfg.fid_reference_n] if self.cfg.fid_reference_n else images

    def reference(self, ctx: EvalContext, stats: bool):
        """Cached reference (mu, sigma) when `stats`, else the reference features."""
        module, _ = self.inception(ctx.device)
        compute = lambda: extract_features(module, self.reference_images(ctx), self.cfg.fid_batch,
                                           ctx.device)
        key = self.reference_key(ctx)
        return F.reference_stats(key, compute) if stats else F.reference_features(key, compute)

    # -- end-of-run metrics --------------------------------------------------------------------
    def feature_metrics(self, ctx: EvalContext) -> dict:
        feats = self.generated_features(ctx, self.cfg.fid_n, self.cfg.steps)
        out = {}
        if "fid" in self.cfg.metrics:
            out["fid"] = F.fid_from_features(feats, self.reference(ctx, stats=True))
        if {"kid", "pr"} & set(self.cfg.metrics):
            ref = self.reference(ctx, stats=False)
            if "kid" in self.cfg.metrics:
                size = min(self.cfg.kid_subset_size, len(feats), len(ref))
                out["kid_mean"], out["kid_std"] = F.kid(feats, ref, self.cfg.kid_subsets, size,
                                                        seed=self.cfg.fid_seed)
            if "pr" in self.cfg.metrics:
                out.update(F.precision_recall(ref, feats, k=self.cfg.pr_k))
        protocol = self.protocol(ctx)
        ctx.record["protocol"] = protocol.to_dict()
        ctx.record["protocol_key"] = F.protocol_key(protocol)
        return out

    def protocol(self, ctx: EvalContext) -> F.Protocol:
        """The protocol of this hook's FID/KID/PR numbers (what makes two of them comparable)."""
        key = self.reference_key(ctx)
        return F.Protocol(weights_sha256=key["weights_sha256"], preprocessing=PREPROCESSING,
                              n_generated=self.cfg.fid_n, reference_split=self.cfg.fid_reference,
                              reference_n=key["n"], sampler=self.cfg.sampler,
                              steps=resolve_steps(self.cfg.sampler, self.cfg.steps,
                                                  ctx.diffusion.T),
                              eta=float(self.cfg.sampler_opts.get("eta", 1.0 if self.cfg.sampler != "ddim" else 0.0)),
                              ema=self.cfg.use_ema, sampling_seed=self.cfg.fid_seed)

    def recon(self, ctx: EvalContext, fn, name: str, prefix: str, extra: dict) -> dict:
        """Per-t SSIM/PSNR table into the record, and its mean over t as leaderboard scalars."""
        images = ctx.dataset.heldout[: self.cfg.recon_images]
        kwargs = dict(batch_size=self.cfg.sample_batch, device=ctx.device, ssim=self.cfg.ssim, **extra)
        if fn is reconstruction_metrics:
            kwargs["generator"] = torch.Generator().manual_seed(self.cfg.fid_seed)
        table = fn(ctx.net_for_sampling(len(images)), ctx.diffusion, images, self.cfg.recon_t,
                   **kwargs)
        ctx.record.setdefault("metrics", {})[name] = {str(t): v for t, v in table.items()}
        return {f"{prefix}ssim_mean": float(np.mean([v["ssim_mean"] for v in table.values()])),
                f"{prefix}psnr_mean": float(np.mean([v["psnr_mean"] for v in table.values()]))}


def sample_seed(fid_seed: int, batch_index: int) -> int:
    """Seed of sampling batch `batch_index` of the FID stream (any N is a prefix of whole batches)."""
    return fid_seed * 1_000_003 + batch_index


def quality_hooks(spec) -> list:
    """The hooks a run needs: none unless the suite asks for quality metrics or an FID proxy."""
    return [QualityHook(spec)] if spec.eval.metrics or spec.eval.fid_proxy_n else []
