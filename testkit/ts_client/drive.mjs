// Drives the bridge's /mcp with the official TypeScript SDK client, as an agent host would:
// connect (initialize handshake), list the tools, then make each call of a plan.
//
//   DISPATCH_AGENT_KEY=... node drive.mjs http://127.0.0.1:8080/mcp '[{"tool": "ticket.get", ...}]'
//
// The plan names tools by their canonical dotted name; each is looked up in tools/list by
// `name` or by `title` (the bridge lists `tech_complete` with the title `tech.complete` by
// default, `tech.complete` itself with DISPATCH_MCP_TOOL_NAMES=dotted), and called under the
// name the server listed. The key comes from the environment, not argv, so `ps` never shows it.
// Prints one JSON document on stdout: what the client negotiated, listed and got back.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, planJson] = process.argv.slice(2);
const key = process.env.DISPATCH_AGENT_KEY;
if (!url || !planJson || !key) {
  console.error("usage: DISPATCH_AGENT_KEY=KEY node drive.mjs MCP_URL PLAN_JSON");
  process.exit(2);
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "dispatch-bridge-ts-test", version: "1.0.0" });
await client.connect(transport);

const { tools } = await client.listTools();
const listed = (canonical) =>
  tools.find((t) => t.name === canonical || t.title === canonical)?.name;

const calls = [];
for (const { tool, arguments: args } of JSON.parse(planJson)) {
  const name = listed(tool);
  if (name === undefined) {
    calls.push({ tool, name: null, isError: null, structuredContent: null, text: null });
    continue;
  }
  const result = await client.callTool({ name, arguments: args });
  calls.push({
    tool,
    name,
    isError: result.isError === true,
    structuredContent: result.structuredContent ?? null,
    text: result.content.filter((c) => c.type === "text").map((c) => c.text).join(""),
  });
}
await client.close();

process.stdout.write(
  JSON.stringify({
    protocolVersion: transport.protocolVersion ?? null,
    server: client.getServerVersion()?.name ?? null,
    tools: tools.map((t) => ({ name: t.name, title: t.title ?? null })),
    calls,
  }) + "\n",
);
