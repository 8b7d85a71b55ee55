"""The FLAC writer: standard CRC check values, the header fields, and the reference decoder."""

from __future__ import annotations

import hashlib
import math
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from comfy_emulator.flac import _crc8, _crc16, _utf8_number, encode_flac


def tone(seconds: float, rate: int, channels: int) -> bytes:
    frames = int(seconds * rate)
    samples = (int(9000 * math.sin(i * 2 * math.pi * 440 / rate)) for i in range(frames))
    return b"".join(struct.pack("<h", s) * channels for s in samples)


def streaminfo(data: bytes) -> tuple[int, int, int, int, bytes]:
    """(sample rate, channels, bits per sample, total samples, MD5) read from the header."""
    assert data[:4] == b"fLaC"
    assert data[4:8] == b"\x00\x00\x00\x22"  # STREAMINFO comes first: 34 bytes
    packed = int.from_bytes(data[18:26], "big")
    fields = (packed >> 44, (packed >> 41 & 0x7) + 1, (packed >> 36 & 0x1F) + 1)
    return (*fields, packed & (1 << 36) - 1, data[26:42])


def test_the_crcs_give_the_standard_check_values() -> None:
    assert _crc8(b"123456789") == 0xF4  # CRC-8, polynomial 0x07
    assert _crc16(b"123456789") == 0xFEE8  # CRC-16/UMTS, polynomial 0x8005


@pytest.mark.parametrize(
    ("number", "coded"),
    [(0, b"\x00"), (0x7F, b"\x7f"), (0x80, b"\xc2\x80"), (0x7FF, b"\xdf\xbf"),
     (0x800, b"\xe0\xa0\x80"), (0x10000, b"\xf0\x90\x80\x80")],
)  # fmt: skip
def test_frame_numbers_are_coded_like_utf8(number: int, coded: bytes) -> None:
    assert _utf8_number(number) == coded == chr(number).encode()


def test_the_header_describes_the_samples() -> None:
    pcm = tone(0.3, 8000, 2)

    data = encode_flac(pcm, 8000, 2, {"prompt": "{}"})

    assert streaminfo(data) == (8000, 2, 16, 2400, hashlib.md5(pcm).digest())
    assert b"prompt={}" in data


def test_silence_is_stored_as_constant_subframes() -> None:
    silence = encode_flac(bytes(2 * 2 * 44100), 44100, 2)
    assert len(silence) < 300  # 11 frames of a few bytes each, not 176 kB


@pytest.mark.skipif(shutil.which("flac") is None, reason="the flac tool is not installed")
@pytest.mark.parametrize("channels", [1, 2])
def test_the_reference_decoder_accepts_the_file_and_gives_back_the_samples(
    tmp_path: Path, channels: int
) -> None:
    pcm = tone(1.1, 22050, channels) + bytes(2 * channels * 5000)  # sound, then silence
    path = tmp_path / "tone.flac"
    path.write_bytes(encode_flac(pcm, 22050, channels))

    # -t checks every CRC and the MD5 of the decoded samples against STREAMINFO's.
    subprocess.run(["flac", "-t", "-s", str(path)], check=True, timeout=30)
    raw = tmp_path / "tone.raw"
    subprocess.run(["flac", "-d", "-s", "--force-raw-format", "--endian=little", "--sign=signed",
                    "-o", str(raw), str(path)], check=True, timeout=30)  # fmt: skip
    assert raw.read_bytes() == pcm
