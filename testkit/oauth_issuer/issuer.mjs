// A real OAuth 2 authorization server for the bridge's end-to-end tests: oauth2-mock-server's
// token endpoint and OpenID discovery, with what a production issuer adds for unattended
// agents (client_credentials):
//   - registered clients (client_secret_basic), each with a role claim, the scopes it may be
//     granted and a token lifetime (a negative one issues already-expired tokens);
//   - `resource` (RFC 8707) becomes the token's `aud`; `client_id` (RFC 9068) names the client;
//   - key rotation in two steps: POST /admin/rotate signs with a new key while the old one is
//     still published, POST /admin/retire stops publishing every key but the newest.
// Only /.well-known/openid-configuration is served (no oauth-authorization-server document),
// so the bridge's discovery fallback is exercised too.
// Usage: node issuer.mjs '<clients JSON>'  ->  prints {"url": "<issuer>"} once listening.
import http from "node:http";
import { OAuth2Issuer, OAuth2Service } from "oauth2-mock-server";

const clients = JSON.parse(process.argv[2] ?? "{}");
let url;
let signing; // the OAuth2Service whose issuer holds the newest key
let published = []; // issuers whose public keys the JWKS lists

async function newService() {
  const issuer = new OAuth2Issuer(false);
  issuer.url = url;
  await issuer.keys.generate("RS256");
  const service = new OAuth2Service(issuer);
  service.on("beforeTokenSigning", (token, req) => {
    const client = clientOf(req);
    const requested = String(req.body.scope ?? "").split(" ").filter(Boolean);
    const scopes = requested.filter((s) => client.record.scopes.includes(s));
    token.payload.client_id = client.id;
    token.payload.sub = client.id;
    token.payload.scope = scopes.join(" ");
    if (client.record.role !== undefined) token.payload.dispatch_role = client.record.role;
    if (req.body.resource !== undefined) token.payload.aud = req.body.resource;
    const ttl = client.record.ttl_s ?? 3600;
    token.payload.exp = token.payload.iat + ttl;
    if (ttl < 0) token.payload.nbf = token.payload.iat + ttl - 10;
  });
  return service;
}

function clientOf(req) {
  const header = req.headers.authorization ?? "";
  if (!header.startsWith("Basic ")) return null;
  const [id, secret] = Buffer.from(header.slice(6), "base64").toString().split(":");
  const record = clients[id];
  if (record === undefined || record.secret !== secret) return null;
  return { id, record };
}

function send(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, url).pathname;
  if (req.method === "POST" && path === "/token" && clientOf(req) === null) {
    return send(res, 401, { error: "invalid_client" });
  }
  if (req.method === "GET" && path === "/jwks") {
    return send(res, 200, { keys: published.flatMap((i) => i.keys.toJSON()) });
  }
  if (req.method === "POST" && path === "/admin/rotate") {
    const old = signing;
    signing = await newService();
    published = [signing.issuer, ...published.filter((i) => i !== old.issuer), old.issuer];
    return send(res, 200, { kid: signing.issuer.keys.toJSON()[0].kid });
  }
  if (req.method === "POST" && path === "/admin/retire") {
    published = [signing.issuer];
    return send(res, 200, { kid: signing.issuer.keys.toJSON()[0].kid });
  }
  return signing.requestHandler(req, res);
});

server.listen(0, "127.0.0.1", async () => {
  url = `http://127.0.0.1:${server.address().port}`;
  signing = await newService();
  published = [signing.issuer];
  process.stdout.write(JSON.stringify({ url }) + "\n");
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
