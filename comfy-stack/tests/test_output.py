"""How the client shows the API's errors: readable lines, or the body as JSON."""

from comfy_stack.client import ApiError
from comfy_stack.output import describe_error, error_document

INVALID_PARAMS = {
    "detail": "invalid parameters for 'demo'",
    "code": "invalid_params",
    "type": "validation",
    "errors": {"width": "1 is below the minimum 8", "color": "not an integer"},
}
PROMPT_REJECTED = {
    "detail": "Prompt outputs failed validation",
    "code": "prompt_rejected",
    "type": "validation",
    "error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
    "node_errors": {
        "3": {
            "class_type": "KSampler",
            "errors": [{"message": "Value not in list", "details": "sampler_name: 'x'"}],
        }
    },
}


def test_an_error_names_its_type_code_and_status_and_lists_each_field() -> None:
    text = describe_error(ApiError(422, INVALID_PARAMS))

    assert text.splitlines() == [
        "error (validation, invalid_params): invalid parameters for 'demo' [HTTP 422]",
        "  width: 1 is below the minimum 8",
        "  color: not an integer",
    ]


def test_comfyui_node_errors_are_one_line_per_node() -> None:
    lines = describe_error(ApiError(422, PROMPT_REJECTED)).splitlines()

    assert lines[1].startswith("  error: {")
    assert lines[2] == "  node 3: (KSampler) Value not in list: sampler_name: 'x'"


def test_as_json_the_error_is_the_api_body_with_its_status() -> None:
    document = error_document(ApiError(422, INVALID_PARAMS))
    assert document == {"error": {"status": 422} | INVALID_PARAMS}
    assert error_document(ApiError(502, {}))["error"] == {
        "status": 502, "code": "error", "type": "service", "detail": "HTTP 502",
    }  # fmt: skip
