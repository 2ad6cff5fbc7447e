"""`--images FILE_OR_FOLDER` (profond.data.inputs.read_images): a user's own images read for a
model of a given shape, converted with a warning that names what changed, or refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from profond.data.inputs import read_images
from profond.errors import ProfondError


def write(path, arr, mode="L"):
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_a_folder_in_name_order_without_warnings(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    write(tmp_path / "b.png", a)
    write(tmp_path / "a.png", 255 - a)
    (tmp_path / "notes.txt").write_text("not an image")
    x, names, notes = read_images(tmp_path, (1, 8, 8))
    assert names == ["a.png", "b.png"] and notes == []
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    # the exact 8-bit levels come back (no resize, no conversion)
    assert torch.equal(torch.round(x[1, 0] * 255).to(torch.uint8), torch.from_numpy(a))
    assert torch.equal(torch.round(x[0, 0] * 255).to(torch.uint8), torch.from_numpy(255 - a))


def test_resize_and_colour_are_converted_with_a_warning(tmp_path):
    rgb = np.zeros((16, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    f = write(tmp_path / "red.png", rgb, mode="RGB")
    x, names, notes = read_images(f, (1, 8, 8))
    assert x.shape == (1, 1, 8, 8) and names == ["red.png"]
    assert any("resized to 8x8" in n and "red.png (20x16)" in n for n in notes), notes
    assert any("greyscale" in n for n in notes), notes
    assert 0 <= float(x.min()) and float(x.max()) <= 1


@pytest.mark.parametrize("make, words", [
    (lambda p: p / "missing.png", ["no such file or folder"]),
    (lambda p: (p / "empty").mkdir() or p / "empty", ["holds no image file"]),
    (lambda p: [(p / "bad.png").write_bytes(b"not a png"), p / "bad.png"][1], ["cannot read it as an image"]),
])
def test_bad_inputs_name_the_fix(tmp_path, make, words):
    with pytest.raises(ProfondError) as e:
        read_images(make(tmp_path), (1, 28, 28))
    for w in words:
        assert w in str(e.value)
