"""The official SDK clients the end-to-end modules call their stack with.

Each module names its own `API_KEY`: the key is the cache's tenant, so one module's stored answers never serve
another's requests. No retries: a test sees each answer the router gave.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

from devstack.stack import Stack


@pytest.fixture(scope="module")
def oai(stack: Stack, request: pytest.FixtureRequest) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=request.module.API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(stack: Stack, request: pytest.FixtureRequest) -> anthropic.Anthropic:
    """Anthropic's SDK sends the key as `x-api-key`, which scopes the cache like a bearer token."""
    return anthropic.Anthropic(base_url=stack.base_url.removesuffix("/v1"), api_key=request.module.API_KEY,
                               max_retries=0)
