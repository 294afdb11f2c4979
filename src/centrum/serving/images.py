"""Decoding uploaded images safely (not an image, truncated, decompression bomb) and making thumbnails."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
THUMBNAIL_SIZE = 256
#: file suffix the service stores an upload under, by the format Pillow detected
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


class BadImageError(ValueError):
    """An upload that is not a usable image; the message names the file and what is wrong."""


def decode_image(data: bytes, filename: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """Decode ``data`` into an RGB image; return it with the suffix to store it under.

    Raises :class:`BadImageError` for an empty file, a file that is not an image, an image of more than
    ``max_pixels`` pixels (checked from the header, before decoding: a decompression bomb never expands) and a
    truncated or corrupt image.
    """
    if not data:
        raise BadImageError(f"{filename}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"{filename}: {width} x {height} = {width * height} pixels is over the limit of {max_pixels}"
                )
            image.load()
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{filename}: not an image (Pillow recognises no image format in it)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"{filename}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"{filename}: truncated or corrupt image ({exc})") from None
    suffix = SUFFIXES.get(image.format or "", ".png")
    return image.convert("RGB"), suffix


def thumbnail_jpeg(path: Path, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG thumbnail (longest side ``size``) of the image file at ``path``."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        thumb = image.convert("RGB")
        thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
