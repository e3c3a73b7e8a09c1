"""``coda-lsp http`` serves a role: the fill model without ``--fast``, the typing model with
it; ``/health`` says which model that is, on which device and dtype."""

import pytest
from http_kit import Server

BODY = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n"}


@pytest.fixture(scope="module", params=["fill", "fast"])
def served(request, saying_models):
    extra = ["--fill-model", str(saying_models["print"]), "--device", "cpu"]
    if request.param == "fast":
        extra.append("--fast")
    server = Server(saying_models["items"], *extra)
    yield request.param, server
    server.stop()


def test_each_mode_fills_with_its_roles_model(served):
    mode, server = served
    status, body = server.request("POST", "/infill", BODY)
    assert status == 200
    said = {w for w in ("items", "print") if w in body["content"]}
    assert said == ({"items"} if mode == "fast" else {"print"}), body["content"]


def test_health_names_the_model_device_and_dtype(served):
    mode, server = served
    status, health = server.request("GET", "/health", headers={})  # no key needed
    assert status == 200 and health["status"] == "ok"
    role = "typing" if mode == "fast" else "fill"
    assert list(health["models"]) == [role]
    described = health["models"][role]
    assert described["model"] == ("typing" if mode == "fast" else "fill")
    assert described["device"] == "cpu" and described["dtype"] in ("float32", "bfloat16", "int8")
    assert "ref" not in described  # no local path to whoever can reach the port
