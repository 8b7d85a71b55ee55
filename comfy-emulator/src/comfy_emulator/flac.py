"""A small FLAC writer: 16-bit PCM in, a valid `.flac` file out, in pure Python.

ComfyUI's SaveAudio encodes FLAC with PyAV (ffmpeg); the emulator has neither, so it writes the
format itself. Compression is the simplest the format allows: a channel whose block is one
repeated value (silence) is a CONSTANT subframe of two bytes, anything else VERBATIM. Layout
(https://xiph.org/flac/format.html): "fLaC", STREAMINFO (with the MD5 of the samples, so
`flac -t` checks the content), a VORBIS_COMMENT block with the tags, then fixed-size frames,
each with its header CRC-8 and frame CRC-16.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Mapping

BLOCK_SIZE = 4096  # samples per channel in each frame (the last one may be shorter)
BITS_PER_SAMPLE = 16
_STREAMINFO, _VORBIS_COMMENT = 0, 4
_VENDOR = b"comfy-emulator"


def encode_flac(
    pcm: bytes, sample_rate: int, channels: int, tags: Mapping[str, str] | None = None
) -> bytes:
    """FLAC bytes for interleaved little-endian int16 `pcm` (`channels` samples per frame)."""
    samples = array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    total = len(samples) // channels
    out = bytearray(b"fLaC")
    out += _block(_STREAMINFO, _streaminfo(pcm, sample_rate, channels, total), last=False)
    out += _block(_VORBIS_COMMENT, _vorbis_comment(tags or {}), last=True)
    for number, start in enumerate(range(0, total, BLOCK_SIZE)):
        block = samples[start * channels : min(start + BLOCK_SIZE, total) * channels]
        out += _frame(number, block, channels)
    return bytes(out)


def _block(kind: int, body: bytes, *, last: bool) -> bytes:
    return bytes([(0x80 if last else 0) | kind]) + len(body).to_bytes(3, "big") + body


def _streaminfo(pcm: bytes, sample_rate: int, channels: int, total: int) -> bytes:
    packed = (sample_rate << 44) | ((channels - 1) << 41) | ((BITS_PER_SAMPLE - 1) << 36) | total
    head = struct.pack(">HH", BLOCK_SIZE, BLOCK_SIZE) + bytes(6)  # frame sizes: unknown (0)
    return head + packed.to_bytes(8, "big") + hashlib.md5(pcm).digest()


def _vorbis_comment(tags: Mapping[str, str]) -> bytes:
    # Vorbis comments are little-endian, unlike the rest of FLAC.
    entries = [f"{key}={value}".encode() for key, value in tags.items()]
    body = struct.pack("<I", len(_VENDOR)) + _VENDOR + struct.pack("<I", len(entries))
    return body + b"".join(struct.pack("<I", len(entry)) + entry for entry in entries)


def _frame(number: int, block: array[int], channels: int) -> bytes:
    size = len(block) // channels
    header = bytearray(b"\xff\xf8")  # sync code, fixed block size
    header.append(0x70)  # block size: 16 bits at the header's end; sample rate: STREAMINFO's
    header.append(((channels - 1) << 4) | (0b100 << 1))  # independent channels, 16 bits
    header += _utf8_number(number)
    header += (size - 1).to_bytes(2, "big")
    header.append(_crc8(header))
    frame = header + b"".join(_subframe(block[ch::channels]) for ch in range(channels))
    return bytes(frame + _crc16(frame).to_bytes(2, "big"))


def _subframe(channel: array[int]) -> bytes:
    first = channel[0]
    if all(sample == first for sample in channel):
        return b"\x00" + struct.pack(">h", first)  # CONSTANT
    return b"\x02" + struct.pack(f">{len(channel)}h", *channel)  # VERBATIM


def _utf8_number(value: int) -> bytes:
    """The frame number, coded like UTF-8 (up to 31 bits, as FLAC allows)."""
    if value < 0x80:
        return bytes([value])
    continuation: list[int] = []
    while value >= 1 << (6 - len(continuation)):
        continuation.append(0x80 | (value & 0x3F))
        value >>= 6
    lead_bits = len(continuation) + 1
    lead = ((0xFF << (8 - lead_bits)) & 0xFF) | value
    return bytes([lead, *reversed(continuation)])


def _crc_table(poly: int, width: int) -> tuple[int, ...]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return tuple(table)


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc
