"""Inputs a user names on the command line: test examples by index (``17``, ``0,5,9``,
``0:8``) or an image file of any size and mode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ProfondError

#: most examples one figure takes
MAX_EXAMPLES = 64
_INDICES = re.compile(r"\d*\s*:\s*\d+|\d+(\s*:\s*\d+)?(\s*,\s*\d+(\s*:\s*\d+)?)*")


def pick_indices(n_total: int, k: int, seed: int) -> Tensor:
    """``k`` distinct indices in ``0..n_total-1``, drawn with ``seed`` (the global RNG untouched)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:k]


def parse_input(spec: str, n_total: int, flag: str = "--input") -> list[int] | Path:
    """``spec``: test indices (``17``, ``0,5,9``, ``0:8``, ``0:4,9``; ranges end-exclusive) or
    the path of an image file (a path that looks like an index is written ``./17``)."""
    text = spec.strip()
    form = "a test index (17), a list (0,5,9), a range (0:8, end excluded)"
    if _INDICES.fullmatch(text):
        idx: list[int] = []
        for part in text.split(","):
            if ":" in part:
                lo_s, hi_s = part.split(":")
                lo, hi = int(lo_s or 0), int(hi_s)
                if hi <= lo:
                    raise ProfondError(f"{flag} {spec!r} has an empty range {part.strip()!r}; write START:END with "
                                       "END > START (END excluded, e.g. 0:8).")
                idx.extend(range(lo, hi))
            else:
                idx.append(int(part))
        bad = [i for i in idx if i >= n_total]
        if bad:
            raise ProfondError(f"{flag} {spec!r}: test index {bad[0]} is out of range; use indices in "
                               f"0..{n_total - 1}.")
        if len(idx) > MAX_EXAMPLES:
            raise ProfondError(f"{flag} {spec!r} names {len(idx)} examples; one figure takes at most "
                               f"{MAX_EXAMPLES}: split the range.")
        return idx
    path = Path(text).expanduser()
    if not path.is_file():
        raise ProfondError(f"{flag} {spec!r} is no image file, nor {form} in 0..{n_total - 1}; "
                           "pass a test index or the path of a PNG/JPG.")
    return path


def read_image(path: Path, shape: tuple[int, ...], invert: bool, flag: str = "--input") -> Tensor:
    """An image file as a ``(1, C, H, W)`` float tensor in [0, 1]: grayscale (or RGB when
    ``C == 3``), resized (Lanczos) to ``H × W``; transparent pixels become background (black, or
    white before ``invert``); ``invert`` maps ``v -> 1 - v`` (a dark object on a white page)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = (int(v) for v in shape)
    try:
        with Image.open(path) as im:
            im.load()
            img = im.convert("RGBA")
    except (UnidentifiedImageError, OSError) as e:
        raise ProfondError(f"{flag} {str(path)!r}: cannot read it as an image ({type(e).__name__}); "
                           "pass a PNG or JPG file, or a test index.") from None
    page = Image.new("RGBA", img.size, (255, 255, 255, 255) if invert else (0, 0, 0, 255))
    img = Image.alpha_composite(page, img).convert("RGB" if c == 3 else "L")
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.copy())
    x = x.permute(2, 0, 1) if x.ndim == 3 else x.unsqueeze(0)
    x = x.unsqueeze(0)
    return 1.0 - x if invert else x


#: most image files one ``--images`` folder may hold
MAX_IMAGE_FILES = 10_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def read_images(spec: str | Path, shape: tuple[int, ...], flag: str = "--images") -> tuple[Tensor, list[str], list[str]]:
    """The images of a file or a folder (its PNG/JPG/... files, sorted by name, not recursive)
    as ``(N, C, H, W)`` floats in [0, 1] for a model of ``shape``; returns them, their names and
    warnings: an image of another size is resized (Lanczos), a colour image greyscaled, and
    each says so, since a likelihood of a converted image is not that of the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(spec).expanduser()
    c, h, w = (int(v) for v in shape)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ProfondError(f"{flag} {str(spec)!r}: the folder holds no image file ({', '.join(IMAGE_SUFFIXES)}); "
                               f"put {h}x{w} images in it.")
        if len(files) > MAX_IMAGE_FILES:
            raise ProfondError(f"{flag} {str(spec)!r}: {len(files):,} images; score at most {MAX_IMAGE_FILES:,} at a "
                               "time (split the folder).")
    elif path.is_file():
        files = [path]
    else:
        raise ProfondError(f"{flag} {str(spec)!r}: no such file or folder; pass a PNG/JPG or a folder of them.")
    xs, names, notes = [], [], []
    resized, coloured = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                size, mode = im.size, im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise ProfondError(f"{flag} {str(f)!r}: cannot read it as an image ({type(e).__name__}); pass PNG or "
                               "JPG files.") from None
        if size != (w, h):
            resized.append(f"{f.name} ({size[0]}x{size[1]})")
        if c == 1 and mode not in ("L", "1", "I", "I;16", "P", "LA"):
            coloured.append(f.name)
        xs.append(read_image(f, shape, invert=False, flag=flag))
        names.append(f.name)
    if resized:
        notes.append(f"warning: resized to {w}x{h} (this model's images): {', '.join(resized[:5])}"
                     + (f" and {len(resized) - 5} more" if len(resized) > 5 else "")
                     + "; the bits/dim are those of the resized images.")
    if coloured:
        notes.append(f"warning: converted to greyscale: {', '.join(coloured[:5])}"
                     + (f" and {len(coloured) - 5} more" if len(coloured) > 5 else "") + ".")
    return torch.cat(xs), names, notes
