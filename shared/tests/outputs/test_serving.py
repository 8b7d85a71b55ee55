"""The Range header, as a table: what a client (or an attacker) may send, and the answer."""

import pytest

from comfy_shared.outputs.serving import RangeNotSatisfiable, byte_range
from comfy_shared.outputs.store import ByteRange


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=90-", ByteRange(90, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),  # more than the file: all of it
        ("bytes=50-99999999999999999999999", ByteRange(50, 99)),  # clamped, no overflow
        (" bytes=0-0 ", ByteRange(0, 0)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file, as HTTP allows
        ("items=0-9", None),  # another unit
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=0x10-20", None),
        ("x" * 10_000, None),
    ],
)
def test_a_range_header_gives_one_range_or_the_whole_file(
    header: str | None, expected: ByteRange | None
) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=9-5", 100), ("bytes=-0", 100), ("bytes=-5", 0)],
)
def test_a_range_outside_the_file_is_refused(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)
