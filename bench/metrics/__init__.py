"""Evaluation metrics: Inception features (inception.py), FID/KID/precision-recall and the pinned
protocol (fid.py), paired reconstruction SSIM/PSNR vs t (ssim.py), cost (cost.py)."""
