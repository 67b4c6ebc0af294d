"""Suite-wide settings: no W&B traffic, and one torch thread (tiny nets on a shared 2-core machine run
several times faster single-threaded; spinning threads only contend)."""

import os

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)
