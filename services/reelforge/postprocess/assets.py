"""The assets of a completed video: object names under {tenant}/{job_id}/ and their content types."""

from __future__ import annotations

from reelforge.postprocess import media

VIDEO_NAME = "video.mp4"
THUMBNAIL_NAME = f"thumbnail.{media.THUMBNAIL_EXT}"
SPRITESHEET_NAME = f"spritesheet.{media.SPRITESHEET_EXT}"

# variant of GET /v1/videos/{id}/content -> (object name, content type)
ASSETS: dict[str, tuple[str, str]] = {
    "video": (VIDEO_NAME, "video/mp4"),
    "thumbnail": (THUMBNAIL_NAME, media.THUMBNAIL_CONTENT_TYPE),
    "spritesheet": (SPRITESHEET_NAME, media.SPRITESHEET_CONTENT_TYPE),
}
