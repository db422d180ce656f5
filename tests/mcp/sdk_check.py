"""Drives memgate's MCP front with the official Python MCP SDK (PyPI `mcp`), over HTTP+SSE and
Streamable HTTP, and prints one JSON line per observation for the Rust test to check.

Usage: sdk_check.py <base-url> <scenario>
"""

import asyncio
import json
import sys

from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    return result.content[0].text if result.content else None


async def exercise(session, out):
    init = await session.initialize()
    out.append({"step": "initialize", "protocolVersion": init.protocol_version,
                "server": init.server_info.name})
    tools = await session.list_tools()
    out.append({"step": "tools", "names": [t.name for t in tools.tools]})
    stored = await session.call_tool("store_memory", {
        "content": "The tomatoes in the north bed ripen in late July.",
        "type": "semantic", "importance": 0.6, "context": {"tags": ["garden"]}})
    memory = json.loads(text_of(stored))
    out.append({"step": "store", "text": text_of(stored)})
    got = await session.call_tool("get_memory", {"id": memory["id"]})
    out.append({"step": "get", "text": text_of(got)})
    found = await session.call_tool("search_memories", {
        "query": "when do the tomatoes ripen", "limit": 5, "includeAssociations": False,
        "detailLevel": "compact", "reconstructChunks": False, "similarityThreshold": 0.0})
    out.append({"step": "search", "text": text_of(found)})
    deleted = await session.call_tool("delete_memory", {"id": memory["id"]})
    out.append({"step": "delete", "text": text_of(deleted)})
    missing = await session.call_tool("get_memory", {"id": memory["id"]})
    out.append({"step": "get_deleted", "text": text_of(missing)})


async def over_sse(base, out):
    async with sse_client(f"{base}/sse", headers={"Memory-Metadata": "user:ann"}) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session, out)


async def over_streamable(base, out):
    async with streamable_http_client(f"{base}/mcp") as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await exercise(session, out)


async def main():
    base, scenario = sys.argv[1], sys.argv[2]
    out = []
    if scenario == "sse":
        await over_sse(base, out)
    elif scenario == "streamable":
        await over_streamable(base, out)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    for line in out:
        print(json.dumps(line))


asyncio.run(main())
