"""Quality metrics of a run under a pinned protocol: the evaluation hook of `bench.run.runner`.

The closed set a suite's `eval.metrics` picks from is `bench.metrics.registry.PRODUCERS` (the one
metric table, which also says which scalars each choice records): `fid` (Heusel et al. 2017), `kid`
(Binkowski et al. 2018), `pr` (precision/recall, Kynkäänniemi et al. 2019) — all from the TF-Inception
pool3 features of `bench.metrics.inception` — and `recon` / `roundtrip` (SSIM and PSNR of one-step
x̂0 and of DDIM encode->decode round trips against the scored held-out images, study 003's table),
`classify` (the class histogram of samples by a classifier the harness trains, study 001's check;
`bench.metrics.classify`). FID, the FID-vs-N curve (`eval.fid_vs_n`) and `classify` share one pass
over the seeded sample stream.

Samples go straight from the sampler into the feature extractor (quantized to uint8 exactly as a
saved PNG, no files written). Image i of the FID stream is a function of (eval.fid_seed, i) alone
(`bench.noise`); under torchrun each rank draws and scores its share of the batches
(`bench.dist.shard`), the features are gathered on rank 0 in index order, rank 0 computes the
metrics and every rank returns them (so every rank's early stopping and pruning decide alike). Reference statistics are cached by (dataset, split, N, resolution,
weights sha256, preprocessing). Every result records its `protocol` and `protocol_key`; the
leaderboard never ranks rows whose keys differ.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from bench import dist
from bench.images import to_uint8
from bench.metrics import fid as F
from bench.metrics.classify import Recipe, class_stats, load_or_train, sample_probs
from bench.metrics.hook import EvalContext
from bench.metrics.inception import PREPROCESSING, extract_features, load_inception
from bench.metrics.sampling import sample
from bench.metrics.ssim import reconstruction_metrics, roundtrip_metrics
from bench.samplers import DETERMINISTIC, SAMPLER_OPTIONS, resolve_steps

FEATURE_METRICS = {"fid", "kid", "pr"}  # the eval.metrics choices scored on Inception features


class QualityHook:
    """hook(phase, ctx) (`bench.metrics.hook`): FID proxy during training; the requested metrics
    at the end, with the protocol they were measured under written into `ctx.record`."""

    def __init__(self, spec, inception: tuple | None = None):
        self.spec, self.cfg = spec, spec.eval
        self._inception = inception  # (module, sha256) to share a loaded network, else loaded lazily
        self._classifier = None      # (classifier, its record) once loaded or trained

    def __call__(self, phase: str, ctx: EvalContext) -> dict:
        return dist.broadcast(self.measure(phase, ctx))

    def measure(self, phase: str, ctx: EvalContext) -> dict:
        """The metrics of `phase` on rank 0 (the other ranks draw their share of samples, get {})."""
        if phase == "train":
            if not self.cfg.fid_proxy_n:
                return {}
            feats = self.generated_features(ctx, self.cfg.fid_proxy_n, None, self.proxy_cfg())
            return {} if feats is None else {
                "fid_proxy": F.fid_from_features(feats, self.reference(ctx, stats=True))}
        out = {}
        if {"classify", *FEATURE_METRICS} & set(self.cfg.metrics):
            out.update(self.sample_metrics(ctx))
        if not dist.is_main():
            return out
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

    def proxy_cfg(self):
        """The eval section the in-training FID proxy samples with (eval.fid_proxy_sampler/steps;
        the section's sampler options that the proxy's sampler takes)."""
        sampler = self.cfg.fid_proxy_sampler or self.cfg.sampler
        opts = {k: v for k, v in self.cfg.sampler_opts.items() if k in SAMPLER_OPTIONS[sampler]}
        steps = self.cfg.fid_proxy_steps or (self.cfg.steps if sampler == self.cfg.sampler else None)
        return dataclasses.replace(self.cfg, sampler=sampler, steps=steps, sampler_opts=opts)

    def sample_batches(self, ctx: EvalContext, n: int, steps, cfg=None, sharded: bool = True):
        """(offset, samples in [-1, 1]) of images [0, n) of the stream FID scores (eval.fid_seed),
        one sampling batch at a time; under torchrun this rank's share of the batches unless not
        `sharded` (with `cfg`'s sampler when given, else this hook's; `steps` None keeps cfg's own)."""
        cfg = cfg or self.cfg
        cfg = cfg if steps is None else dataclasses.replace(cfg, steps=steps)
        starts = list(range(0, n, self.cfg.sample_batch))
        for start in dist.shard(starts) if sharded else starts:
            b = min(self.cfg.sample_batch, n - start)
            drawn = sample(ctx.net_for_sampling(b, start), ctx.diffusion, cfg, b, ctx.shape,
                           seed=self.cfg.fid_seed, start=start, amp=ctx.amp, device=ctx.device)
            yield start, ctx.generated(drawn, start)

    def generated_features(self, ctx: EvalContext, n: int, steps, cfg=None) -> np.ndarray | None:
        """Features [n, 2048] of images [0, n) of the stream (fid_seed), in index order, on rank 0
        (None on the other ranks, which draw and score their share)."""
        module, _ = self.inception(ctx.device)
        return dist.gather_ordered([(start, extract_features(module, to_uint8(x), self.cfg.fid_batch,
                                                             ctx.device))
                                    for start, x in self.sample_batches(ctx, n, steps, cfg)])

    def reference_key(self, ctx: EvalContext) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self.spec.data).items()
                if k != "flip" and not (k == "folds" and v is None)}  # older keys stay valid
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
    def sample_metrics(self, ctx: EvalContext) -> dict:
        """FID/KID/PR, the FID-vs-N curve and the class histogram, from one pass over the samples."""
        metrics = set(self.cfg.metrics)
        n_feat = max([self.cfg.fid_n, *(self.cfg.fid_vs_n or [])]) if FEATURE_METRICS & metrics else 0
        n_cls = (self.cfg.classify_n or self.cfg.fid_n) if "classify" in metrics else 0
        classifier = self.classifier(ctx) if n_cls else None
        module = self.inception(ctx.device)[0] if n_feat else None
        feats, probs = [], []
        for start, x in self.sample_batches(ctx, max(n_feat, n_cls), self.cfg.steps):
            if start < n_feat:
                feats.append((start, extract_features(module, to_uint8(x[: n_feat - start]),
                                                      self.cfg.fid_batch, ctx.device)))
            if start < n_cls:
                probs.append((start, sample_probs(classifier, x[: n_cls - start], ctx.device)
                              .cpu().numpy()))
        feats = dist.gather_ordered(feats) if n_feat else None
        probs = dist.gather_ordered(probs) if n_cls else None
        if not dist.is_main():
            return {}
        out = self.feature_metrics(ctx, feats) if n_feat else {}
        if n_cls:
            out.update(self.classify(ctx, torch.from_numpy(probs)))
        return out

    def classifier(self, ctx: EvalContext):
        """The harness-trained classifier of the dataset (cached by data, recipe and seed)."""
        if self._classifier is None:
            given = dict(self.cfg.classifier)
            if "widths" in given:
                given["widths"] = tuple(given["widths"])
            self._classifier = load_or_train(ctx.dataset, Recipe(**given), ctx.device)
        return self._classifier[0]

    def classify(self, ctx: EvalContext, probs: torch.Tensor) -> dict:
        """Class histogram, entropy, KL to uniform and confidence into the record; the scalars out."""
        stats = class_stats(probs, self._classifier[1]["classes"])
        ctx.record.setdefault("metrics", {})["classify"] = stats
        info = {**self._classifier[1], "n_classified": len(probs)}
        ctx.record.setdefault("protocol", {})["classifier"] = info
        return {f"classify_{k}": stats[k] for k in ("entropy", "kl_uniform", "confidence")}

    def untrained(self, ctx: EvalContext) -> dict:
        """`eval.untrained_reference`: FID/KID/PR of `ctx.net` before any training, from the very
        samples, N and reference the final evaluation uses, as `untrained_<metric>` (every rank)."""
        if not FEATURE_METRICS & set(self.cfg.metrics):
            return {}
        feats = self.generated_features(ctx, self.cfg.fid_n, self.cfg.steps)
        out = {} if feats is None else self.feature_metrics(ctx, feats, curves=False)
        return dist.broadcast({f"untrained_{k}": v for k, v in out.items()})

    def feature_metrics(self, ctx: EvalContext, all_feats: np.ndarray, curves: bool = True) -> dict:
        feats, out = all_feats[: self.cfg.fid_n], {}
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
        ctx.record["protocol"] = {**ctx.record.get("protocol", {}), **protocol.to_dict()}
        ctx.record["protocol_key"] = F.protocol_key(protocol)
        if self.cfg.fid_vs_n and curves:
            self.fid_vs_n(ctx, all_feats, protocol)
        return out

    def fid_vs_n(self, ctx: EvalContext, feats: np.ndarray, protocol) -> None:
        """Study 001's Fig. 9 at the end of the run: FID/KID at each N of eval.fid_vs_n, prefixes of
        one sample set, in result.json's `curves` as `bench eval --curves n` writes it."""
        rows = F.fid_kid_at_n(feats, self.reference(ctx, stats=True), self.reference(ctx, stats=False),
                              self.cfg.fid_vs_n, self.cfg.kid_subsets, self.cfg.kid_subset_size,
                              self.cfg.fid_seed)
        curve = {k: v for k, v in protocol.to_dict().items() if k != "n_generated"}
        curve.update(sample_batch=self.cfg.sample_batch, amp=ctx.amp, kid_subsets=self.cfg.kid_subsets,
                     kid_subset_size=self.cfg.kid_subset_size)
        curves = ctx.record.setdefault("curves", {})
        curves["fid_vs_n"] = rows
        curves.setdefault("protocol", {})["fid_vs_n"] = curve

    def protocol(self, ctx: EvalContext) -> F.Protocol:
        """The protocol of this hook's FID/KID/PR numbers (what makes two of them comparable)."""
        key = self.reference_key(ctx)
        return F.Protocol(weights_sha256=key["weights_sha256"], preprocessing=PREPROCESSING,
                              n_generated=self.cfg.fid_n, reference_split=self.cfg.fid_reference,
                              reference_n=key["n"], sampler=self.cfg.sampler,
                              steps=resolve_steps(self.cfg.sampler, self.cfg.steps,
                                                  ctx.diffusion.T),
                              eta=float(self.cfg.sampler_opts.get("eta", 0.0 if self.cfg.sampler in DETERMINISTIC else 1.0)),
                              ema=self.cfg.use_ema, sampling_seed=self.cfg.fid_seed)

    def recon(self, ctx: EvalContext, fn, name: str, prefix: str, extra: dict) -> dict:
        """Per-t SSIM/PSNR table into the record, and its mean over t as leaderboard scalars."""
        images = ctx.scored.images[: self.cfg.recon_images]
        kwargs = dict(batch_size=self.cfg.sample_batch, device=ctx.device, ssim=self.cfg.ssim, **extra)
        if fn is reconstruction_metrics:
            kwargs["noise_seed"] = self.cfg.fid_seed   # per-image ε: independent of sample_batch
        table = fn(ctx.net_for_sampling(len(images)), ctx.diffusion, images, self.cfg.recon_t,
                   **kwargs)
        ctx.record.setdefault("metrics", {})[name] = {str(t): v for t, v in table.items()}
        return {f"{prefix}ssim_mean": float(np.mean([v["ssim_mean"] for v in table.values()])),
                f"{prefix}psnr_mean": float(np.mean([v["psnr_mean"] for v in table.values()]))}


def quality_hooks(spec) -> list:
    """The hooks a run needs: none unless the suite asks for quality metrics or an FID proxy."""
    return [QualityHook(spec)] if spec.eval.metrics or spec.eval.fid_proxy_n else []
