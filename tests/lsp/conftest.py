"""pytest-lsp clients talking to a real ``coda-lsp`` subprocess with the tiny checkpoint.

Each client profile (VS Code, Neovim) starts one server per module; tests use distinct
document URIs so they do not interfere.
"""

import pytest_asyncio
from lsp_session import PROFILES, start


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=list(PROFILES))
async def client(request, tiny_model_dir):
    client = await start(tiny_model_dir, request.param)
    client.profile = request.param
    yield client
    await client.shutdown_session()
    await client.stop()
