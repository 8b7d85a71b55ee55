"""The store's helpers shared by every backend."""

import pytest

from comfy_shared.outputs.store import attachment_disposition, blob_key


def test_the_filename_of_a_download_cannot_break_out_of_its_header() -> None:
    assert attachment_disposition("a.png") == 'attachment; filename="a.png"'
    assert attachment_disposition('x"; evil=1\r\n.png') == (
        "attachment; filename=\"x_; evil=1__.png\"; filename*=UTF-8''x%22%3B%20evil%3D1%0D%0A.png"
    )


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("été.png", "attachment; filename=\"_t_.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png"),
        ('a\\b"c.png', "attachment; filename=\"a_b_c.png\"; filename*=UTF-8''a%5Cb%22c.png"),
    ],
)
def test_a_name_that_is_not_plain_ascii_is_also_sent_exactly(filename: str, header: str) -> None:
    assert attachment_disposition(filename) == header


def test_a_blob_key_is_sharded_by_the_first_two_hex_digits() -> None:
    digest = "ab" + "0" * 62
    assert blob_key(digest) == f"blobs/ab/{digest}"
