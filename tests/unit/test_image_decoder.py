"""ImageDecoder through the codec libraries (JPEG, PNG, TIFF, WebP, JPEG2000): small random images
are encoded with Pillow, decoded by kiln and compared with Pillow's own decode, which is what the
ONNX reference implementation returns. Lossless formats must match exactly; so must JPEG and lossy
WebP, since kiln and Pillow run the same decoders with the same defaults (libjpeg-turbo ISLOW DCT
with fancy upsampling, libwebp's default). Broken, truncated and oversized inputs must fail with a
kiln error, never crash. A build without a codec library is skipped for that format."""
import io
import os
import struct
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import util  # noqa: E402

Image = pytest.importorskip("PIL.Image")
FORMATS = ("RGB", "BGR", "Grayscale")


def decode(data, fmt="RGB"):
    arr = np.frombuffer(data, np.uint8).copy()
    m = util.node_model("ImageDecoder", [("img", arr)], [("y", np.uint8)], attrs={"pixel_format": fmt}, opset=20)
    return util.run_kiln(m, {"img": arr})[0]


def pillow_decode(data, fmt):
    """What the ONNX reference returns, except that alpha is dropped (kiln always gives 3 channels)."""
    img = Image.open(io.BytesIO(data))
    if fmt == "Grayscale":
        return np.asarray(img.convert("L"))[:, :, None]
    rgb = np.asarray(img.convert("RGB"))
    return rgb if fmt == "RGB" else rgb[:, :, ::-1]


def random_image(rng, mode, h=23, w=37):
    """Random pixels, never all zero; a smooth ramp is mixed in so lossy codecs see image-like data."""
    ramp = (np.add.outer(np.arange(h) * 5, np.arange(w) * 3) % 256).astype(np.uint8)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 16, (h, w)).astype(np.uint8), "P")
        img.putpalette(rng.integers(1, 256, 16 * 3).astype(np.uint8).tobytes())
        return img
    ch = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    a = rng.integers(0, 256, (h, w, ch)).astype(np.uint8)
    a = (a // 2 + ramp[:, :, None] // 2).astype(np.uint8)
    a[0, 0, 0] = 200  # never all zero
    return Image.fromarray(a[:, :, 0] if ch == 1 else a, mode)


def encode(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def needs(codec_name, data):
    """Skips when this build lacks the library (the error names the Debian -dev package)."""
    try:
        decode(data)
    except Exception as e:  # noqa: BLE001
        if "which this build does not link" in str(e):
            pytest.skip(f"{codec_name} not linked into this build")


CASES = {
    # name: (Pillow mode, Pillow format, save options)
    "png_rgb": ("RGB", "PNG", {}),
    "png_rgba": ("RGBA", "PNG", {}),
    "png_l": ("L", "PNG", {}),
    "png_la": ("LA", "PNG", {}),
    "png_palette": ("P", "PNG", {}),
    "png_palette_trns": ("P", "PNG", {"transparency": 3}),
    "png_l_trns": ("L", "PNG", {"transparency": 100}),
    "png_1bit": ("1", "PNG", {}),
    "jpeg_420": ("RGB", "JPEG", {"quality": 90}),
    "jpeg_444": ("RGB", "JPEG", {"quality": 95, "subsampling": 0}),
    "jpeg_422": ("RGB", "JPEG", {"quality": 75, "subsampling": 1}),
    "jpeg_progressive": ("RGB", "JPEG", {"quality": 80, "progressive": True}),
    "jpeg_gray": ("L", "JPEG", {"quality": 85}),
    "tiff_raw": ("RGB", "TIFF", {}),
    "tiff_lzw": ("RGB", "TIFF", {"compression": "tiff_lzw"}),
    "tiff_deflate": ("RGB", "TIFF", {"compression": "tiff_adobe_deflate"}),
    "tiff_packbits": ("RGB", "TIFF", {"compression": "packbits"}),
    "tiff_l": ("L", "TIFF", {}),
    "webp_lossless": ("RGB", "WEBP", {"lossless": True}),
    "webp_lossy": ("RGB", "WEBP", {"quality": 80}),
    "webp_rgba_lossless": ("RGBA", "WEBP", {"lossless": True}),
    "jp2_rgb": ("RGB", "JPEG2000", {}),
    "j2k_rgb": ("RGB", "JPEG2000", {"no_jp2": True}),
    "jp2_l": ("L", "JPEG2000", {}),
    "jp2_lossy": ("RGB", "JPEG2000", {"quality_mode": "rates", "quality_layers": [20], "irreversible": True}),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_pillow(case, fmt):
    mode, pil_fmt, kw = CASES[case]
    rng = np.random.default_rng()
    img = random_image(rng, mode)
    if case == "png_palette_trns":
        img.info["transparency"] = 3
    data = encode(img, pil_fmt, **kw)
    needs(pil_fmt, data)
    got, want = decode(data, fmt), pillow_decode(data, fmt)
    assert got.shape == want.shape
    util.assert_same(got, want, 0, 0, what=case)


def sample(pil_fmt, **kw):
    rng = np.random.default_rng(1)
    data = encode(random_image(rng, "RGB"), pil_fmt, **kw)
    needs(pil_fmt, data)
    return data


@pytest.mark.parametrize("pil_fmt", ["PNG", "JPEG", "TIFF", "WEBP", "JPEG2000"])
def test_truncated_fails(pil_fmt):
    data = sample(pil_fmt)
    for cut in (len(data) // 2, 40, 16):
        with pytest.raises(Exception, match="ImageDecoder"):
            decode(data[:cut])


@pytest.mark.parametrize("pil_fmt", ["PNG", "JPEG", "TIFF", "WEBP", "JPEG2000"])
def test_corrupt_never_crashes(pil_fmt):
    """Flipped bytes: an error or an image of the right size, never a crash (ASan build included)."""
    data = sample(pil_fmt)
    rng = np.random.default_rng(7)
    for _ in range(40):
        bad = bytearray(data)
        for i in rng.integers(4, len(bad), 6):  # keep the magic bytes: the codec itself must cope
            bad[i] ^= int(rng.integers(1, 256))
        try:
            out = decode(bytes(bad))
        except Exception as e:  # noqa: BLE001
            assert "ImageDecoder" in str(e) or "corrupt" in str(e), str(e)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_huge_png_header_fails_before_allocating():
    ihdr = struct.pack(">IIBBBBB", 200000, 200000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    needs("PNG", data)
    with pytest.raises(Exception, match="ImageDecoder"):
        decode(data)


def test_huge_jpeg_header_fails_before_allocating():
    data = bytearray(sample("JPEG"))
    at = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[at + 5:at + 9] = struct.pack(">HH", 65000, 65000)
    with pytest.raises(Exception, match="ImageDecoder"):
        decode(bytes(data))


def test_huge_tiff_header_fails():
    tiff = bytearray(sample("TIFF"))
    # patch ImageWidth / ImageLength (tags 256/257) in the first IFD of the little-endian file
    ifd = struct.unpack("<I", tiff[4:8])[0]
    for k in range(struct.unpack("<H", tiff[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", tiff[e:e + 4])
        if tag in (256, 257):
            tiff[e + 8:e + 12] = struct.pack("<I", 1 << 20) if typ == 4 else struct.pack("<HH", 60000, 0)
    with pytest.raises(Exception, match="ImageDecoder"):
        decode(bytes(tiff))
