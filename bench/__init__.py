"""bench: a benchmark and ablation harness for diffusion (DDPM) image models (see DESIGN.md)."""
__version__ = "0.1.0"
