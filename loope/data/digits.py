"""scikit-learn's bundled handwritten digits: 1797 grey 8×8 images, 10 classes, no download."""

from __future__ import annotations

import torch

from loope.data.splits import Split


def load_digits_split() -> Split:
    """All 1797 images as float32 (n, 1, 8, 8) in [0, 1] and their int64 classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16).unsqueeze(1)  # n, 1, 8, 8
    return Split(images, torch.from_numpy(digits.target).long())
