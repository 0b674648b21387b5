"""Turn generated uint8 frames into the delivered assets: H.264 MP4, poster image and spritesheet.

Everything goes through a real ffmpeg binary fed raw rgb24 frames on stdin, so no frame ever touches
disk before it is encoded, and the same binary serves development, CI and production images.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]

# The imageio-ffmpeg static build ships libwebp; WebP is what OpenAI's Videos API serves as thumbnail.
THUMBNAIL_CONTENT_TYPE = "image/webp"
THUMBNAIL_EXT = "webp"
SPRITESHEET_CONTENT_TYPE = "image/jpeg"
SPRITESHEET_EXT = "jpg"

MP4_CONTENT_TYPE = "video/mp4"

# Generous for clips of a few seconds on 2 cores; a hung ffmpeg must not pin a worker forever.
DEFAULT_TIMEOUT_S = 120.0
# Visually lossless for generated content at a fraction of the time of slower presets.
_X264_CRF = "18"
_X264_PRESET = "veryfast"
_STDERR_TAIL_CHARS = 2000
# ffmpeg splits `-metadata k=v` at the first '=', so keys are restricted to a plain identifier set.
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class MediaError(Exception):
    """Encoding failed: bad frames handed to us, or ffmpeg itself failed or timed out."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.message = message
        self.stderr_tail = stderr_tail


def default_ffmpeg_exe() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def encode_mp4(
    frames: Frames,
    fps: int,
    out_path: Path,
    metadata: Mapping[str, str],
    *,
    ffmpeg_exe: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Write an H.264/yuv420p MP4 with the moov atom first, so players start before the download ends."""
    _check_frames(frames)
    if fps < 1:
        raise MediaError(f"fps must be a positive integer, got {fps}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise MediaError(f"yuv420p needs even dimensions, got {width}x{height}")
    output_args = [
        "-c:v", "libx264", "-preset", _X264_PRESET, "-crf", _X264_CRF, "-pix_fmt", "yuv420p",
        "-r", str(fps), "-frames:v", str(frames.shape[0]),
        # use_metadata_tags keeps custom keys (model, job_id...) that plain MP4 tags would drop.
        "-movflags", "+faststart+use_metadata_tags",
        *_metadata_args(metadata),
        "-f", "mp4",
    ]  # fmt: skip
    _run_ffmpeg(frames, fps, output_args, out_path, ffmpeg_exe, timeout_s)


def write_thumbnail(
    frames: Frames, out_path: Path, *, ffmpeg_exe: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Poster image from the middle frame: the first frames of a generated clip are often the least settled."""
    _check_frames(frames)
    middle = frames[frames.shape[0] // 2][None]  # (1, H, W, 3)
    output_args = ["-frames:v", "1", "-c:v", "libwebp", "-quality", "85", "-f", "webp"]
    _run_ffmpeg(middle, 1, output_args, out_path, ffmpeg_exe, timeout_s)


def write_spritesheet(
    frames: Frames,
    out_path: Path,
    columns: int = 8,
    max_tiles: int = 16,
    *,
    ffmpeg_exe: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """JPEG grid of evenly sampled frames, row-major, unused cells black."""
    _check_frames(frames)
    if columns < 1 or max_tiles < 1:
        raise MediaError(f"columns and max_tiles must be positive, got {columns} and {max_tiles}")
    sheet = _spritesheet_grid(frames, columns, max_tiles)[None]  # (1, rows * H, cols * W, 3)
    output_args = ["-frames:v", "1", "-c:v", "mjpeg", "-q:v", "3", "-f", "image2", "-update", "1"]
    _run_ffmpeg(sheet, 1, output_args, out_path, ffmpeg_exe, timeout_s)


def spritesheet_layout(num_frames: int, columns: int, max_tiles: int) -> tuple[int, int, list[int]]:
    """(rows, cols, frame indices) of the grid; indices spread evenly from first to last frame."""
    tiles = min(num_frames, max_tiles)
    cols = min(columns, tiles)
    rows = math.ceil(tiles / cols)
    indices = np.linspace(0, num_frames - 1, tiles).round().astype(int).tolist()
    return rows, cols, indices


def _spritesheet_grid(frames: Frames, columns: int, max_tiles: int) -> Frames:
    _, height, width, _ = frames.shape
    rows, cols, indices = spritesheet_layout(frames.shape[0], columns, max_tiles)
    sheet = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
    for tile, index in enumerate(indices):
        row, col = divmod(tile, cols)
        sheet[row * height : (row + 1) * height, col * width : (col + 1) * width] = frames[index]
    return sheet


def _check_frames(frames: object) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise MediaError(f"frames must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise MediaError(f"frames must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")


def _metadata_args(metadata: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise MediaError(f"metadata key {key!r} must match {_METADATA_KEY.pattern}")
        args += ["-metadata", f"{key}={value}"]
    return args


def _run_ffmpeg(
    frames: Frames,
    input_fps: int,
    output_args: Sequence[str],
    out_path: Path,
    ffmpeg_exe: str | None,
    timeout_s: float,
) -> None:
    _, height, width, _ = frames.shape
    command = [
        ffmpeg_exe or default_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(input_fps), "-i", "pipe:0",
        *output_args,
        str(out_path),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            input=np.ascontiguousarray(frames).tobytes(),
            capture_output=True,
            timeout=timeout_s,
            check=False,  # the exit status is turned into MediaError below, with the stderr tail
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"ffmpeg timed out after {timeout_s:.0f} s", _tail(exc.stderr)) from exc
    except OSError as exc:
        raise MediaError(f"could not run ffmpeg {command[0]!r}: {exc}") from exc
    if result.returncode != 0:
        raise MediaError(f"ffmpeg exited with status {result.returncode}", _tail(result.stderr))


def _tail(stderr: bytes | None) -> str:
    return (stderr or b"").decode("utf-8", errors="replace")[-_STDERR_TAIL_CHARS:].strip()
