import inspect

import comfy_service.errors as service_errors
from comfy_service.errors import STATUS_FOR
from comfy_shared.api.sse import InvalidEventId
from comfy_shared.errors import ComfyStackError, TooManyStreams


def test_every_domain_error_of_the_service_is_mapped() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(service_errors, inspect.isclass)
        if issubclass(obj, ComfyStackError) and obj.__module__ == service_errors.__name__
    }
    assert defined
    assert defined <= set(STATUS_FOR)


def test_codes_are_unique_and_server_side_failures_are_the_service_fault() -> None:
    codes = [mapping.code for mapping in STATUS_FOR.values()]
    assert len(codes) == len(set(codes))
    for mapping in STATUS_FOR.values():
        if mapping.status >= 500:
            assert mapping.type.value == "service", mapping.code


def test_errors_of_the_shared_history_routes_are_mapped() -> None:
    assert STATUS_FOR[InvalidEventId].status == 400
    too_many = STATUS_FOR[TooManyStreams]
    assert (too_many.status, too_many.code) == (429, "too_many_streams")
    assert too_many.headers is not None
    assert too_many.headers(TooManyStreams(10, 5)) == {"Retry-After": "5"}
