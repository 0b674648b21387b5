"""Provenance of a delivered MP4, on real files: tags that ffprobe shows, and C2PA Content Credentials signed
offline with a locally generated chain, read back by c2pa and by `reelforge provenance verify`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from reelforge.cli import main
from reelforge.postprocess import media
from reelforge.postprocess.tasks import provenance
from reelforge.provenance import credentials
from reelforge.provenance.credentials import ContentSigner, JobClaim
from reelforge.settings import Settings
from tests.unit.test_media import make_frames, top_level_boxes

CLAIM = JobClaim(job_id="video_abc123", model="reelforge-mini", model_version="weights-7",
                 created_at="2026-11-21T14:00:00Z", generator_version="0.1.0")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return credentials.write_dev_chain(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mp4") / "unsigned.mp4"
    media.encode_mp4(make_frames(), 12, path, provenance(CLAIM, "a red circle moving left"))
    return path


@pytest.fixture(scope="module")
def signed(unsigned: Path, chain: tuple[Path, Path, Path]) -> Path:
    path = unsigned.with_name("signed.mp4")
    ContentSigner(chain[0], chain[1]).sign_mp4(unsigned, path, CLAIM)
    return path


def ffprobe_tags(path: Path) -> dict[str, str]:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe (Debian package ffmpeg) is missing: run scripts/bootstrap.sh"
    out = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format_tags", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    tags: dict[str, str] = json.loads(out)["format"]["tags"]
    return tags


@pytest.mark.parametrize("name", ["unsigned", "signed"])
def test_ffprobe_shows_model_version_job_and_creation_time(name: str, request: pytest.FixtureRequest) -> None:
    tags = ffprobe_tags(request.getfixturevalue(name))
    assert tags["reelforge_model"] == "reelforge-mini"
    assert tags["reelforge_model_version"] == "weights-7"
    assert tags["reelforge_job_id"] == "video_abc123"
    assert tags["creation_time"].startswith("2026-11-21T14:00:00")
    assert "AI-generated" in tags["comment"] and "video_abc123" in tags["comment"]


def test_signed_mp4_still_plays_and_starts_before_download_ends(signed: Path) -> None:
    boxes = top_level_boxes(signed)
    assert boxes.index("moov") < boxes.index("mdat")
    with av.open(str(signed)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 16


def test_manifest_names_model_version_job_and_time(signed: Path, chain: tuple[Path, Path, Path]) -> None:
    result = credentials.verify(signed, trust_anchors=chain[2])
    assert result.state == "Trusted", result.failures
    assert result.claim == {"job_id": "video_abc123", "model": "reelforge-mini", "model_version": "weights-7",
                            "created_at": "2026-11-21T14:00:00Z", "generator_version": "0.1.0"}
    assert result.signer == "reelforge development signer"
    # Without the root as anchor the manifest is intact but its signer is not vouched for.
    assert credentials.verify(signed).state == "Valid"


def test_edited_video_fails_verification(signed: Path, tmp_path: Path, chain: tuple[Path, Path, Path]) -> None:
    data = bytearray(signed.read_bytes())
    data[data.find(b"mdat") + 100] ^= 0xFF
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    result = credentials.verify(tampered, trust_anchors=chain[2])
    assert result.state == "Invalid" and not result.ok
    assert any("bmffHash.mismatch" in failure for failure in result.failures)


def test_another_chain_is_not_trusted(signed: Path, tmp_path: Path) -> None:
    _, _, other_root = credentials.write_dev_chain(tmp_path)
    result = credentials.verify(signed, trust_anchors=other_root)
    assert (result.state, result.ok) == ("Valid", False)
    refused = CliRunner().invoke(main, ["provenance", "verify", str(signed), "--trust-anchors", str(other_root)])
    assert refused.exit_code == 1 and "Content Credentials Valid" in refused.output


def test_cli_verify(signed: Path, unsigned: Path, chain: tuple[Path, Path, Path]) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["provenance", "verify", str(signed), "--trust-anchors", str(chain[2])])
    assert ok.exit_code == 0, ok.output
    assert "Trusted" in ok.output and "job_id: video_abc123" in ok.output and "model_version: weights-7" in ok.output
    as_json = runner.invoke(main, ["provenance", "verify", str(signed), "--json"])
    assert json.loads(as_json.output)["claim"]["job_id"] == "video_abc123"
    missing = runner.invoke(main, ["provenance", "verify", str(unsigned)])
    assert missing.exit_code == 1 and "no Content Credentials" in missing.output


def test_signer_refuses_an_unusable_key(tmp_path: Path, chain: tuple[Path, Path, Path]) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(credentials.ProvenanceError, match="cannot load the C2PA certificate chain"):
        ContentSigner(chain[0], bad)


def test_settings_want_chain_and_key_together(chain: tuple[Path, Path, Path]) -> None:
    with pytest.raises(ValueError, match="REELFORGE_C2PA_PRIVATE_KEY"):
        Settings(environment="development", c2pa_cert_chain=chain[0])
