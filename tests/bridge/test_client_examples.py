"""The client configurations in examples/ are what docs/clients.md says, and they work: each
one, with its variables filled in the way its client fills them, points at /mcp with
`Authorization: Bearer <agent key>`, and that request lists the tools from the real bridge.
docs/clients.md links every example, so none is left undocumented."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tools import catalog

from .conftest import Bridge

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GUIDE = ROOT / "docs" / "clients.md"
KEY = "the-agent-key"
PLACEHOLDER = "PASTE_YOUR_AGENT_KEY_HERE"

#: An entry's connection as its client sends it: (URL, HTTP headers).
Connection = tuple[str, dict[str, str]]


def claude_code(config: dict[str, Any]) -> Connection:
    """Claude Code `.mcp.json`: an `http` entry; `${VAR}` expanded from the environment."""
    entry = config["mcpServers"]["dispatch-bridge"]
    assert entry["type"] == "http"
    env = {"DISPATCH_AGENT_KEY": KEY}
    headers = {
        name: re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], value)
        for name, value in entry["headers"].items()
    }
    return entry["url"], headers


def vscode(config: dict[str, Any]) -> Connection:
    """VS Code `.vscode/mcp.json`: `servers`, and `${input:ID}` from a secret prompt."""
    entry = config["servers"]["dispatch-bridge"]
    assert entry["type"] == "http"
    prompts = {i["id"]: i for i in config["inputs"]}

    def answer(match: re.Match[str]) -> str:
        prompt = prompts[match[1]]
        assert prompt["type"] == "promptString"
        assert prompt["password"] is True  # the key is kept in secret storage, never shown
        return KEY

    headers = {
        name: re.sub(r"\$\{input:([\w-]+)\}", answer, value)
        for name, value in entry["headers"].items()
    }
    return entry["url"], headers


def cursor(config: dict[str, Any]) -> Connection:
    """Cursor `.cursor/mcp.json`: a `url` entry; `${env:VAR}` from the environment."""
    entry = config["mcpServers"]["dispatch-bridge"]
    assert "command" not in entry
    env = {"DISPATCH_AGENT_KEY": KEY}
    headers = {
        name: re.sub(r"\$\{env:(\w+)\}", lambda m: env[m[1]], value)
        for name, value in entry["headers"].items()
    }
    return entry["url"], headers


def claude_desktop(config: dict[str, Any]) -> Connection:
    """Claude Desktop: `npx mcp-remote URL --header Name:${VAR}`, VAR from the entry's env
    (the user pastes the key over the placeholder)."""
    entry = config["mcpServers"]["dispatch-bridge"]
    assert entry["command"] == "npx"
    args: list[str] = entry["args"]
    assert args[:2] == ["-y", "mcp-remote"]
    url = args[2]
    env = {k: v.replace(PLACEHOLDER, KEY) for k, v in entry["env"].items()}
    headers = {}
    for flag, value in zip(args[3::2], args[4::2], strict=True):
        assert flag == "--header"
        # mcp-remote splits at the first colon; no space in args (some hosts split on them).
        assert " " not in value
        name, _, raw = value.partition(":")
        headers[name] = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], raw)
    return url, headers


#: Every JSON example and the client format it is written in.
CONFIGS: dict[str, Callable[[dict[str, Any]], Connection]] = {
    "mcp-client-config.json": claude_code,
    "clients/claude-code.mcp.json": claude_code,
    "clients/vscode.mcp.json": vscode,
    "clients/cursor.mcp.json": cursor,
    "clients/claude_desktop_config.json": claude_desktop,
}


def example_files() -> list[str]:
    return sorted(
        str(p.relative_to(EXAMPLES))
        for p in EXAMPLES.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_every_json_example_has_a_known_client_format() -> None:
    assert sorted(p for p in example_files() if p.endswith(".json")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", list(CONFIGS))
async def test_each_client_config_as_its_client_reads_it_lists_the_tools(
    bridge: Bridge, name: str
) -> None:
    config = json.loads((EXAMPLES / name).read_text())
    url, headers = CONFIGS[name](config)
    assert url == "http://localhost:8080/mcp"
    assert headers == {"Authorization": f"Bearer {KEY}"}
    # The same request, sent to the bridge under test with a real key in place of KEY.
    served = urlsplit(str(bridge.session._base_url))
    url = urlsplit(url)._replace(netloc=served.netloc).geturl()
    sent = {h: v.replace(KEY, bridge.keys["supervisor"]) for h, v in headers.items()}

    async with (
        httpx2.AsyncClient(headers=sent) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        listed = (await client.list_tools()).tools

    assert {t.name.replace(".", "_") for t in listed} == {
        t.name.replace(".", "_") for t in catalog() if t.allowed("supervisor")
    }


@pytest.mark.parametrize(
    "name", [p for p in example_files() if p.startswith("clients/") and p.endswith(".py")]
)
def test_each_python_example_connects_to_mcp_with_a_bearer_credential(name: str) -> None:
    source = (EXAMPLES / name).read_text()
    tree = ast.parse(source)  # at least valid Python, whatever its imports
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert "/mcp" in strings
    assert "http://localhost:8080" in strings
    bearer = 'f"Bearer {key}"' in source or "ClientCredentialsOAuthProvider" in source
    assert bearer, "the agent key as `Authorization: Bearer ...`, or OAuth client credentials"


def test_the_guide_links_every_example_and_every_link_resolves() -> None:
    guide = GUIDE.read_text()
    links = set(re.findall(r"\]\((\.\./examples/[^)#]+)\)", guide))
    linked = {str((GUIDE.parent / link).resolve().relative_to(EXAMPLES)) for link in links}

    assert set(example_files()) <= linked
    assert all((GUIDE.parent / link).is_file() for link in links)


def test_the_readme_points_to_the_guide() -> None:
    assert "(docs/clients.md)" in (ROOT / "README.md").read_text()
