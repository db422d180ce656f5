// Drives memgate's MCP front with the official TypeScript MCP SDK (npm `@modelcontextprotocol/sdk`,
// the SDK cldmemory and most MCP clients are built on) and prints one JSON line per observation,
// for the Rust tests in tests/tests/mcp_ts_sdk.rs to check.
//
// Usage: node ts_check.mjs <base-url> <sse|streamable> [forwarded-tool]
//   one client through the five memory tools, a refused call, an unknown tool, a cancelled
//   call, and (when named) a tool memgate forwards to the legacy service.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [base, transportName, forwardedTool] = process.argv.slice(2);
const out = (line) => console.log(JSON.stringify(line));
const textOf = (result) => result?.content?.[0]?.text ?? null;

function transport() {
  const requestInit = { headers: { "Memory-Metadata": "user:tess" } };
  if (transportName === "sse") {
    return new SSEClientTransport(new URL(`${base}/sse?memoryMetadata=user:tess`), { requestInit });
  }
  if (transportName === "streamable") {
    return new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit });
  }
  throw new Error(`unknown transport ${transportName}`);
}

const client = new Client({ name: "ts-check", version: "1.0.0" });
await client.connect(transport());
out({ step: "initialize", server: client.getServerVersion()?.name, protocolVersion: client.transport?.protocolVersion ?? null });

const tools = await client.listTools();
out({ step: "tools", names: tools.tools.map((tool) => tool.name) });

const stored = await client.callTool({
  name: "store_memory",
  arguments: { content: "The pears in the orchard ripen in September", type: "semantic", importance: 0.6, context: { tags: ["orchard"] } },
});
const memory = JSON.parse(textOf(stored));
out({ step: "store", id: memory.id, text: textOf(stored) });

const got = await client.callTool({ name: "get_memory", arguments: { id: memory.id } });
out({ step: "get", text: textOf(got) });

const found = await client.callTool({
  name: "search_memories",
  arguments: { query: "when do the pears ripen", limit: 50, includeAssociations: false, detailLevel: "compact", reconstructChunks: false },
});
out({ step: "search", text: textOf(found) });

const refused = await client.callTool({ name: "get_memory", arguments: {} });
out({ step: "refused", text: textOf(refused) });

try {
  const unknown = await client.callTool({ name: "no_such_tool", arguments: {} });
  out({ step: "unknown", text: textOf(unknown), isError: unknown.isError ?? false });
} catch (error) {
  out({ step: "unknown", error: String(error.message ?? error), code: error.code ?? null });
}

// Cancelled by the client before the answer: the SDK sends notifications/cancelled and
// rejects the call; the session goes on.
const controller = new AbortController();
const cancelled = client.callTool(
  { name: "search_memories", arguments: { query: "anything at all", limit: 5, includeAssociations: false, detailLevel: "compact", reconstructChunks: false } },
  undefined,
  { signal: controller.signal },
);
controller.abort("changed my mind");
try {
  await cancelled;
  out({ step: "cancel", rejected: false });
} catch (error) {
  out({ step: "cancel", rejected: true, error: String(error.message ?? error) });
}

if (forwardedTool) {
  const forwarded = await client.callTool({ name: forwardedTool, arguments: { confirm: false } });
  out({ step: "forwarded", text: textOf(forwarded) });
}

const deleted = await client.callTool({ name: "delete_memory", arguments: { id: memory.id } });
out({ step: "delete", text: textOf(deleted) });
const missing = await client.callTool({ name: "get_memory", arguments: { id: memory.id } });
out({ step: "get_deleted", text: textOf(missing) });

await client.close();
