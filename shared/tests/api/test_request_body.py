import pytest
from fastapi.exceptions import RequestValidationError

from comfy_shared.api.request_body import (
    generate_request_body,
    generate_request_from_document,
    generate_request_from_json,
)
from comfy_shared.api.schemas import GenerateRequest
from comfy_shared.api.strict_json import InvalidNumber, MalformedJson


def test_a_valid_body_becomes_the_request_with_large_seeds_intact() -> None:
    request = generate_request_from_json(
        b'{"workflow": "demo", "params": {"seed": 18446744073709551615}, "priority": -1000}'
    )

    assert request.params == {"seed": 2**64 - 1}
    assert request.priority == -1000


def test_the_strict_parser_runs_before_the_schema() -> None:
    with pytest.raises(InvalidNumber):
        generate_request_from_json(b'{"workflow": "demo", "params": {"cfg": NaN}}')
    with pytest.raises(MalformedJson):
        generate_request_from_json(b'{"workflow": ')


def test_a_body_of_the_wrong_shape_is_a_validation_error_located_in_the_body() -> None:
    with pytest.raises(RequestValidationError) as refused:
        generate_request_from_document({"workflow": "demo", "priority": 2000})

    [error] = refused.value.errors()
    assert error["loc"] == ("body", "priority")


def test_the_openapi_body_refers_to_the_request_schema_and_documents_forms_on_request() -> None:
    json_only = generate_request_body()
    with_forms = generate_request_body(forms=True)

    assert json_only["required"] is True
    assert list(json_only["content"]) == ["application/json"]
    assert list(with_forms["content"]) == ["application/json", "multipart/form-data"]
    ref = json_only["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/GenerateRequest"
    schema = GenerateRequest.model_json_schema()
    assert schema["properties"]["priority"]["maximum"] == 1000
    assert "pattern" in schema["properties"]["task_id"]["anyOf"][0]
