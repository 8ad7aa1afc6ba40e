"""A folder of real-world junk: every bad file skipped with a reason, every good one loaded, bounded memory."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.datagen.real.images import ImageRejected, load_rgb, scan_folder


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) with a tiny, bogus IDAT: decoding must never start."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    good = {
        "a_rgb.jpg": _save(rgb, "JPEG"),
        "b_cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "c_16bit.png": _save(
            Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)), "PNG"
        ),
        "d_rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "e_gray.png": _save(rgb.convert("L"), "PNG"),
        "sub/f_palette.gif": _save(rgb.convert("P"), "GIF"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    good["g_exif.jpg"] = _save(rgb, "JPEG", exif=exif)
    full = _save(rgb, "PNG")
    bad = {
        "h_empty.jpg": b"",
        "i_corrupt.jpg": b"\xff\xd8\xff\xe0 this is not jpeg data at all" * 4,
        "j_truncated.png": full[: len(full) // 2],
        "k_tiny.png": _save(Image.new("RGB", (1, 1)), "PNG"),
        "l_huge.png": _png_header_only(20000, 20000),
        "m_notes.txt": b"hello",
    }
    for name, data in {**good, **bad}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    outside = tmp_path / "secret.png"
    outside.write_bytes(full)
    (root / "n_escape.png").symlink_to(outside)
    (root / "o_inside_link.png").symlink_to(root / "a_rgb.jpg")
    return root


def test_junk_folder_sorted_skips_with_reasons(junk):
    good, skipped = scan_folder(junk)
    names = [g.rel for g in good]
    assert names == sorted(names)
    reasons = {s.rel: s.reason for s in skipped}
    assert set(reasons) == {
        "h_empty.jpg",
        "i_corrupt.jpg",
        "k_tiny.png",
        "l_huge.png",
        "m_notes.txt",
        "n_escape.png",
    }
    assert "empty" in reasons["h_empty.jpg"]
    assert "too small" in reasons["k_tiny.png"] and "too large" in reasons["l_huge.png"]
    assert "outside" in reasons["n_escape.png"] and "not an image" in reasons["m_notes.txt"]
    # the truncated PNG has a valid header: it passes the scan and fails at decode, with a reason
    assert "j_truncated.png" in names
    with pytest.raises(ImageRejected, match="truncated|corrupt"):
        load_rgb(next(g for g in good if g.rel == "j_truncated.png"))
    loaded = {g.rel: load_rgb(g) for g in good if g.rel != "j_truncated.png"}
    assert set(loaded) == {"a_rgb.jpg", "b_cmyk.jpg", "c_16bit.png", "d_rgba.png", "e_gray.png", "g_exif.jpg",
                           "o_inside_link.png", "sub/f_palette.gif"}  # fmt: skip
    for rel, a in loaded.items():
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, rel
    assert loaded["g_exif.jpg"].shape == (64, 48, 3)  # EXIF rotation applied
    assert loaded["a_rgb.jpg"].shape == (48, 64, 3)
    c16 = loaded["c_16bit.png"]
    assert c16.max() > 200 and (c16[..., 0] == c16[..., 1]).all()  # 16-bit scaled into 8 bits, not clipped


def test_directory_symlinks_are_listed_as_skipped(junk, tmp_path):
    """A linked folder is never followed; it is listed with its reason, not silently ignored."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "p.png").write_bytes((junk / "a_rgb.jpg").read_bytes())
    (junk / "p_out_dir").symlink_to(outside, target_is_directory=True)
    (junk / "q_in_dir").symlink_to(junk / "sub", target_is_directory=True)
    good, skipped = scan_folder(junk)
    reasons = {s.rel: s.reason for s in skipped}
    assert "outside" in reasons["p_out_dir/"] and "not followed" in reasons["p_out_dir/"]
    assert "inside" in reasons["q_in_dir/"]
    assert not any(g.rel.startswith(("p_out_dir", "q_in_dir")) for g in good)


def test_huge_header_rejected_without_decoding(tmp_path):
    import tracemalloc

    p = tmp_path / "huge.png"
    p.write_bytes(_png_header_only(20000, 20000))
    tracemalloc.start()
    good, skipped = scan_folder(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not good and "too large" in skipped[0].reason
    assert peak < 20 * 2**20  # a decode would need 1.2 GB
    with pytest.raises(ImageRejected, match="too large"):
        load_rgb(p)
