"""Drives memgate's MCP front with the official Python MCP SDK (PyPI `mcp`) and prints one JSON
line per observation, for the Rust tests in tests/tests/mcp_sdk.rs to check.

Usage:
  sdk_check.py session <base-url> <sse|streamable>    one client through the memory tools
  sdk_check.py sessions <base-url> <sse|streamable> N  N clients at once, each its own memory
  sdk_check.py stdio <command> [args...]               one client of a server it launches
  sdk_check.py modern <base-url> <auto|2026-07-28>     the SDK's `Client` on /mcp without a
                                                       session (2026-07-28), found by its probe
                                                       (`auto`) or pinned
"""

import asyncio
import json
import sys
from contextlib import asynccontextmanager

from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    return result.content[0].text if result.content else None


@asynccontextmanager
async def connect(base, transport, metadata=None):
    headers = {"Memory-Metadata": metadata} if metadata else None
    if transport == "sse":
        async with sse_client(f"{base}/sse", headers=headers) as (read, write):
            async with ClientSession(read, write) as session:
                yield session
    elif transport == "streamable":
        url = f"{base}/mcp" + (f"?memoryMetadata={metadata}" if metadata else "")
        async with streamable_http_client(url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                yield session
    else:
        raise SystemExit(f"unknown transport {transport}")


async def search(session, query):
    """One search, right after the store: like cldmemory, memgate answers it with the memory
    the session just stored."""
    arguments = {"query": query, "limit": 50, "includeAssociations": False,
                 "detailLevel": "compact", "reconstructChunks": False}
    return text_of(await session.call_tool("search_memories", arguments))


async def walk_through(session, out, tag=""):
    """initialize, tools/list, then store, get, search, delete and get again."""
    init = await session.initialize()
    out.append({"step": "initialize", "protocolVersion": init.protocol_version,
                "server": init.server_info.name})
    tools = await session.list_tools()
    out.append({"step": "tools", "names": [t.name for t in tools.tools]})
    stored = await session.call_tool("store_memory", {
        "content": f"The tomatoes in the north bed ripen in late July {tag}".strip(),
        "type": "semantic", "importance": 0.6, "context": {"tags": ["garden"]}})
    memory = json.loads(text_of(stored))
    out.append({"step": "store", "id": memory["id"], "text": text_of(stored)})
    got = await session.call_tool("get_memory", {"id": memory["id"]})
    out.append({"step": "get", "text": text_of(got)})
    found = await search(session, "when do the tomatoes ripen")
    out.append({"step": "search", "text": found})
    deleted = await session.call_tool("delete_memory", {"id": memory["id"]})
    out.append({"step": "delete", "text": text_of(deleted)})
    missing = await session.call_tool("get_memory", {"id": memory["id"]})
    out.append({"step": "get_deleted", "text": text_of(missing)})


async def one_session(base, transport):
    out = []
    async with connect(base, transport, "user:ann") as session:
        await walk_through(session, out)
    return out


async def many_sessions(base, transport, count):
    async def one(n):
        async with connect(base, transport, f"user:u{n}") as session:
            await session.initialize()
            stored = await session.call_tool("store_memory", {
                "content": f"Session {n} keeps the number {n}", "type": "semantic"})
            memory_id = json.loads(text_of(stored))["id"]
            got = json.loads(text_of(await session.call_tool("get_memory", {"id": memory_id})))
            return {"step": "session", "n": n, "id": memory_id, "got_id": got["id"],
                    "user": got["metadata"].get("user")}
    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def over_stdio(command, args):
    out = []
    params = StdioServerParameters(command=command, args=args)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await walk_through(session, out)
            if "delete_all_memories" in out[1]["names"]:
                cleared = await session.call_tool("delete_all_memories", {"confirm": True})
                out.append({"step": "delete_all", "text": text_of(cleared)})
    return out


async def modern(base, mode):
    """The 2026-07-28 client: no initialize, every request on its own; the same walk."""
    from mcp import Client

    out = []
    async with Client(f"{base}/mcp", mode=mode) as client:
        info = client.server_info
        out.append({"step": "connected", "protocolVersion": client.protocol_version,
                    "server": info.name if info else None})
        tools = await client.list_tools()
        out.append({"step": "tools", "names": [t.name for t in tools.tools]})
        stored = await client.call_tool("store_memory", {
            "content": "The tomatoes in the north bed ripen in late July",
            "type": "semantic", "importance": 0.6, "context": {"tags": ["garden"]}})
        memory = json.loads(text_of(stored))
        out.append({"step": "store", "id": memory["id"], "text": text_of(stored)})
        got = await client.call_tool("get_memory", {"id": memory["id"]})
        out.append({"step": "get", "text": text_of(got)})
        deleted = await client.call_tool("delete_memory", {"id": memory["id"]})
        out.append({"step": "delete", "text": text_of(deleted)})
        missing = await client.call_tool("get_memory", {"id": memory["id"]})
        out.append({"step": "get_deleted", "text": text_of(missing)})
    return out


async def main():
    mode = sys.argv[1]
    if mode == "session":
        out = await one_session(sys.argv[2], sys.argv[3])
    elif mode == "sessions":
        out = await many_sessions(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "stdio":
        out = await over_stdio(sys.argv[2], sys.argv[3:])
    elif mode == "modern":
        out = await modern(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
    for line in out:
        print(json.dumps(line))


asyncio.run(main())
