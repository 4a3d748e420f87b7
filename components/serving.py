"""What one request may ask of a served model, and the checks that refuse a bad one in one line.

The served pyfuncs (:mod:`components.registry`, :mod:`components.imagine.serving`)
and the CLIs (``capsynth caption``, ``capsynth sample``) share these checks, so
the same bad input gets the same reason: the pyfuncs raise it as MLflow's
``INVALID_PARAMETER_VALUE`` (``mlflow models serve`` answers 400 and goes on
serving), the CLIs print it after the file's name and exit with code 2.

Images are untrusted: the pixel count is read from the header before any
decoding (PIL's own decompression-bomb limit is set to the same number), a
JPEG is decoded at the smallest DCT scale that still covers the model's input
size, and a file that is empty, not an image or truncated is refused, not
crashed on. No MLflow here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from components.config import ConfigError
from components.data.images import to_rgb

ENV_PREFIX = "CAPSYNTH_SERVE_"


class BadInput(ValueError):
    """An input the limits or the image decoder refuse; the message is the reason, one line."""


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Limits of one request; each is read from ``CAPSYNTH_SERVE_<FIELD>`` by :meth:`from_env`.

    Attributes:
        max_rows: Rows of one request (images to caption, generator or caption rows).
        max_image_bytes: Size of one encoded image (a file, or a cell after base64 decoding).
        max_image_pixels: Width times height of one image, read from its header.
        max_beam_size: The captioner's ``beam_size`` is ``1..max_beam_size``.
        max_samples: Images one VAE/GAN request may ask for, all rows together (each ``n`` is at least 1).
    """

    max_rows: int = 64
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_beam_size: int = 10
    max_samples: int = 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServingLimits:
        """The defaults, overridden by ``CAPSYNTH_SERVE_MAX_ROWS`` etc. (read when a served model loads).

        Raises:
            ConfigError: A variable that is not a positive integer, named.
        """
        values = {}
        for field in dataclasses.fields(cls):
            name = env_name(field.name)
            if name in environ:
                try:
                    values[field.name] = int(environ[name])
                except ValueError:
                    raise ConfigError(f"{name}={environ[name]!r} is not an integer") from None
                if values[field.name] < 1:
                    raise ConfigError(f"{name} must be at least 1, got {values[field.name]}")
        return cls(**values)

    def set_pil_limit(self) -> None:
        """Make PIL's decompression-bomb check (in ``Image.open``) use ``max_image_pixels`` too (process-wide)."""
        Image.MAX_IMAGE_PIXELS = self.max_image_pixels

    def check_rows(self, rows: int) -> None:
        if rows > self.max_rows:
            raise BadInput(f"{rows} rows in one request, more than {self.max_rows} ({env_name('max_rows')})")

    def check_beam_size(self, beam_size: int) -> None:
        if not 1 <= beam_size <= self.max_beam_size:
            raise BadInput(f"beam_size must be in 1..{self.max_beam_size} ({env_name('max_beam_size')}), "
                           f"got {beam_size}")

    def check_n(self, n: int) -> None:
        if not 1 <= n <= self.max_samples:
            raise BadInput(f"n must be in 1..{self.max_samples} ({env_name('max_samples')}), got {n}")

    def check_samples(self, ns: Sequence[int]) -> None:
        """A VAE/GAN request: its rows, each row's ``n``, and all of them together."""
        self.check_rows(len(ns))
        for row, n in enumerate(ns):
            try:
                self.check_n(n)
            except BadInput as err:
                raise BadInput(f"row {row}: {err}") from None
        if sum(ns) > self.max_samples:
            raise BadInput(f"{sum(ns)} images in one request, more than {self.max_samples} "
                           f"({env_name('max_samples')})")

    def image_bytes(self, value: object) -> bytes:
        """The encoded image in one ``image`` cell: bytes as they are, a string base64-decoded.

        The length of a string is checked before it is decoded.
        """
        if isinstance(value, str):
            if len(value) > 4 * math.ceil(self.max_image_bytes / 3):
                raise BadInput(f"a base64 string of {len(value)} characters, more than an image of "
                               f"{self.max_image_bytes} bytes ({env_name('max_image_bytes')}) takes")
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error as err:
                raise BadInput(f"not base64 ({err})") from None
        if not isinstance(value, (bytes, bytearray)):
            raise BadInput(f"an image must be bytes or a base64 string, got {type(value).__name__}")
        self._check_size(len(value))
        return bytes(value)

    def open_image(self, source: bytes | str | os.PathLike, size: int) -> Image.Image:
        """Decode an encoded image (bytes or a file) to RGB, for a model that reads ``size`` x ``size``.

        A large JPEG is decoded at a reduced scale (``Image.draft``) that keeps
        both sides at least ``size``; the caller resizes.

        Raises:
            BadInput: Empty, over a limit, not an image, truncated or otherwise undecodable.
        """
        if isinstance(source, bytes):
            self._check_size(len(source))
            file: BinaryIO | str | os.PathLike = io.BytesIO(source)
        else:
            self._check_size(os.path.getsize(source))
            file = source
        pixels = f"more than {self.max_image_pixels} pixels ({env_name('max_image_pixels')})"
        try:
            with Image.open(file) as img:  # reads the header only
                if img.width * img.height > self.max_image_pixels:
                    raise BadInput(f"{img.width}x{img.height} = {img.width * img.height} pixels, {pixels}")
                img.draft("RGB", (size, size))
                img.load()
                return to_rgb(img)
        except BadInput:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadInput(f"{pixels}: {_one_line(err)}") from None
        except UnidentifiedImageError:
            raise BadInput("not an image (no format PIL reads)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data
            raise BadInput(f"a broken image ({_one_line(err)})") from None

    def _check_size(self, size: int) -> None:
        if size == 0:
            raise BadInput("empty (0 bytes)")
        if size > self.max_image_bytes:
            raise BadInput(f"{size} bytes, more than {self.max_image_bytes} ({env_name('max_image_bytes')})")


def env_name(field: str) -> str:
    """The environment variable of a :class:`ServingLimits` field."""
    return ENV_PREFIX + field.upper()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


__all__ = ["BadInput", "ENV_PREFIX", "ServingLimits", "env_name"]
