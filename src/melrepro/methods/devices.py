"""The one place that turns a ``device`` setting into a torch device."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["choose_device"]


def choose_device(name: str = "auto") -> torch.device:
    """Resolve ``"auto"`` / ``"cpu"`` / ``"cuda"`` to a torch device.

    ``"auto"`` picks CUDA when available, else the CPU, and logs which; ``"cuda"`` without a GPU
    fails loudly rather than training for hours on the CPU.

    Raises
    ------
    RuntimeError
        ``"cuda"`` requested but ``torch.cuda.is_available()`` is False.
    ValueError
        An unknown name.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        logger.info("device 'auto' chose %s", device)
        return device
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; choose 'auto', 'cpu' or 'cuda'")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' requested but torch.cuda.is_available() is False "
            "(no GPU visible to this job: check CUDA_VISIBLE_DEVICES and the driver, "
            "or set device: auto / cpu in the config)"
        )
    return torch.device(name)
