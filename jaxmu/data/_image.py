"""Host-side image conversion with PIL (protocol §1.2).

torchvision's default ``Resize`` on PIL images is PIL bilinear resampling;
jaxmu applies it once when a dataset is loaded and stores uint8 results, so
training never resizes. Pixel-exact agreement with torchvision holds only for
the same PIL version.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 ``[H, W, C]`` image (C = 1 or 3) to ``[size, size, C]``.

    PIL bilinear (``Image.BILINEAR``), as torchvision ``Resize(size)`` on a
    square image. A no-op when the image already has that size.
    """
    h, w, c = image.shape
    if h == size and w == size:
        return image
    pil = Image.fromarray(image[..., 0] if c == 1 else image)  # mode "L" / "RGB"
    out = np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return out.reshape(size, size, c)


def load_rgb(path: str, size: int) -> np.ndarray:
    """Open an image file, convert it to RGB explicitly, resize to ``size``.

    Returns uint8 ``[size, size, 3]``.
    """
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
