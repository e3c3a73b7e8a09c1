"""The request shapes as a schema: ``/openapi.json`` lists every path and the bodies' schemas,
and the schema and the checks agree (what it lists is accepted, a wrong type is a 400 that
names the field, anything it does not list is refused)."""

from __future__ import annotations

import pytest

from coda_lsp.http.wire import BadRequest, parse_completions, parse_infill

ROUTES = ("/infill", "/v1/completions", "/completions", "/v1/fim/completions", "/v1/models",
          "/v1/models/{model}", "/health", "/metrics", "/openapi.json")
PARSERS = {"InfillRequest": parse_infill, "CompletionsRequest": parse_completions}
WRONG = {"string": 3, "integer": "3", "number": "3", "boolean": "yes", "array": 3,
         "object": [1]}


@pytest.fixture(scope="module")
def api(http_server):
    status, doc = http_server.request("GET", "/openapi.json", headers={})  # no key: no text
    assert status == 200 and isinstance(doc, dict)
    return doc


def refs(node, found=None) -> set[str]:
    found = set() if found is None else found
    if isinstance(node, dict):
        if "$ref" in node:
            found.add(node["$ref"])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)
    return found


def typed(prop: dict) -> str | None:
    """The one JSON type a property has (null aside), None for a union or an ignored knob."""
    kinds = [b.get("type") for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return kinds[0] if len(kinds) == 1 and kinds[0] in WRONG else None


def test_openapi_lists_every_path_and_the_request_schemas(api):
    assert api["openapi"].startswith("3.") and api["info"]["title"]
    assert set(ROUTES) <= set(api["paths"])
    schemas = api["components"]["schemas"]
    for path, name in (("/infill", "InfillRequest"), ("/v1/completions", "CompletionsRequest"),
                       ("/v1/fim/completions", "CompletionsRequest")):
        body = api["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == f"#/components/schemas/{name}"
        assert "400" in api["paths"][path]["post"]["responses"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs(api))
    infill = schemas["InfillRequest"]
    assert infill["additionalProperties"] is False  # unknown fields are refused
    assert infill["properties"]["input_prefix"]["type"] == "string"
    # a span request (the remote engine) carries a hole fill's steps past the setting's 1024
    assert infill["properties"]["steps"]["anyOf"][0] == {"maximum": 4096, "minimum": 1,
                                                         "type": "integer"}
    assert schemas["CompletionsRequest"]["properties"]["steps"]["anyOf"][0]["maximum"] == 1024
    assert "lengths" in infill["properties"] and "settings" in infill["properties"]
    assert schemas["CompletionsRequest"]["properties"]["n"]["anyOf"][0]["maximum"] == 4


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_what_the_schema_lists_is_accepted_and_a_wrong_type_names_the_field(api, name):
    parse, props = PARSERS[name], api["components"]["schemas"][name]["properties"]
    checked = 0
    for field, prop in props.items():
        if field == "stream_states":  # needs stream: true, checked after the shape
            continue
        if "default" in prop:
            parse({field: prop["default"]})  # the default is a valid value
        kind = typed(prop)
        if kind is None:
            continue
        with pytest.raises(BadRequest) as caught:
            parse({field: WRONG[kind]})
        message = str(caught.value)
        assert message.startswith(f"{field} must be ") and "\n" not in message, message
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_a_field_the_schema_does_not_list_is_refused(api, name):
    props = api["components"]["schemas"][name]["properties"]
    for field in ("functions", "input_prefixx", "max_token", "tools"):
        assert field not in props
        with pytest.raises(BadRequest, match=f"unknown field '{field}'"):
            PARSERS[name]({field: 1})


def test_ignored_knobs_are_listed_and_accept_anything(api):
    props = api["components"]["schemas"]["InfillRequest"]["properties"]
    assert "ignored" in props["top_k"]["description"]
    req = parse_infill({"top_k": "40", "cache_prompt": True, "t_max_predict_ms": 500,
                        "samplers": ["top_k", "temperature"], "input_prefix": "a"})
    assert req.prefix == "a" and dict(req.options) == {}
