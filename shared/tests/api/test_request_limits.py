import pytest

from comfy_shared.api.request_limits import (
    GraphTooLarge,
    StringTooLong,
    check_graph_size,
    check_string_sizes,
)


def test_a_graph_over_the_node_limit_is_refused_before_its_nodes_are_read() -> None:
    check_graph_size({"prompt": dict.fromkeys("abc", None)}, 3)
    check_graph_size({"workflow": "demo"}, 3)
    check_graph_size(["not", "an", "object", "!"], 3)
    with pytest.raises(GraphTooLarge, match="4 nodes; at most 3"):
        check_graph_size({"prompt": dict.fromkeys("abcd", None)}, 3)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"client": {"note": "x" * 11}}, "$.client.note"),
        ({"prompt": {"1": {"inputs": {"t": ["a", "x" * 11]}}}}, '$.prompt["1"].inputs.t[1]'),
        ({"client": {"k" * 11: 1}}, "$.client.kkkkkkkkkkk"),
        ({"client": {"note": "\u00e9" * 6}}, "$.client.note"),  # 6 characters, 12 bytes
    ],
)
def test_the_first_string_over_the_limit_is_named_by_its_path(document: object, path: str) -> None:
    with pytest.raises(StringTooLong) as refused:
        check_string_sizes(document, 10)

    assert refused.value.path == path


def test_strings_at_the_limit_and_skipped_paths_pass() -> None:
    check_string_sizes({"params": {"prompt": "x" * 10, "note": "\u00e9" * 5}}, 10)
    check_string_sizes({"params": {"image": "A" * 1000}}, 10, skip={("params", "image")})


def test_a_huge_key_is_not_echoed_back_in_the_path() -> None:
    with pytest.raises(StringTooLong) as refused:
        check_string_sizes({"client": {"k" * 100_000: 1}}, 10)

    assert len(refused.value.path) < 100
    assert refused.value.path.endswith('..."]')
