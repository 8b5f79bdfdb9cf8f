// contract.mjs — docs/openapi.yaml as a contract for `agentdb serve`:
//
//  1. the routes the server serves (the table in src/api.c) and the spec's
//     paths and methods are the same set, both ways;
//  2. every operation has an operationId, unique;
//  3. a real server (env ADB_BIN) is driven through a scenario that calls
//     every route, and every answer is validated (Ajv) against the schema
//     the spec gives for its status: an undocumented status or a body that
//     does not match fails. Response objects are validated closed
//     (additionalProperties: false unless the spec says otherwise), so an
//     undocumented field fails too. Every operation must have been
//     validated with a 2xx answer at least once.
//
// Run by tests/node/contract.sh (which lints the spec with Redocly first).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import Ajv from "ajv";

import { root, startServer as startServerIn, stopServer as stopServerIn } from "./server.mjs";
const spec = yaml.load(readFileSync(join(root, "docs/openapi.yaml"), "utf8"));
const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error("FAIL " + msg);
};

// ------------------------------------------------ 1. routes vs spec
const METHODS = ["get", "put", "post", "delete"];
const specOps = new Map(); // "GET /path" -> operation
for (const [path, item] of Object.entries(spec.paths))
  for (const m of METHODS)
    if (item[m]) specOps.set(`${m.toUpperCase()} ${path}`, { path, method: m, op: item[m], item });

const apiC = readFileSync(join(root, "src/api.c"), "utf8");
const served = new Set();
for (const m of apiC.matchAll(/\{\s*(GET|PUT|POST|DEL),\s*"([^"]+)"/g))
  // Personalizer's routes follow Microsoft's spec, not ours (its contract
  // test is personalizer.mjs, with Microsoft's SDK; docs/personalizer.md).
  if (!m[2].startsWith("/personalizer/")) served.add(`${m[1] === "DEL" ? "DELETE" : m[1]} ${m[2]}`);
if (served.size < 10) fail(`found only ${served.size} routes in src/api.c: the table's shape changed?`);
for (const r of served) if (!specOps.has(r)) fail(`served but not in the spec: ${r}`);
for (const r of specOps.keys()) if (!served.has(r)) fail(`in the spec but not served: ${r}`);
console.log(`routes: ${served.size} served, ${specOps.size} in the spec`);

// ------------------------------------------------ 2. operationIds
const ids = new Set();
for (const [k, { op }] of specOps) {
  if (!op.operationId) fail(`no operationId: ${k}`);
  else if (ids.has(op.operationId)) fail(`operationId used twice: ${op.operationId}`);
  ids.add(op.operationId);
}

// ------------------------------------------------ 3. responses
// Refs point into the spec document, registered under the id "spec"; every
// object schema of a response is closed unless it says otherwise.
function close(schema, seen = new Set()) {
  if (!schema || typeof schema !== "object" || seen.has(schema)) return schema;
  seen.add(schema);
  if (Array.isArray(schema)) return schema.map((s) => close(s, seen));
  const out = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === "$ref") out[k] = "spec" + v;
    else if (k === "example" || k === "description") continue;
    else if (k === "properties") out[k] = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, close(s, seen)]));
    else out[k] = close(v, seen);
  }
  if (out.type === "object" && out.properties && !("additionalProperties" in out)) out.additionalProperties = false;
  if (out.nullable && out.type) out.type = [out.type, "null"];
  delete out.nullable;
  return out;
}
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addFormat("date-time", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
ajv.addSchema({ $id: "spec", components: close(spec.components) });

function resolveRef(obj) {
  while (obj && obj.$ref) obj = obj.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return obj;
}

function operationOf(method, path) {
  for (const [, o] of specOps) {
    if (o.method !== method.toLowerCase()) continue;
    const re = new RegExp("^" + o.path.replace(/\{[^}]+\}/g, "[^/]+") + "$");
    if (re.test(path)) return o;
  }
  return null;
}

const validated = new Map(); // "GET /path" -> statuses seen
let checked = 0;
function validate(method, url, status, ctype, text) {
  const path = url.split("?")[0];
  const o = operationOf(method, path);
  if (!o) return fail(`${method} ${path}: no operation in the spec`);
  const key = `${o.method.toUpperCase()} ${o.path}`;
  const resp = resolveRef(o.op.responses[String(status)]);
  if (!resp) return fail(`${method} ${url}: status ${status} is not documented (${text.slice(0, 200)})`);
  const content = resp.content || {};
  if (content["application/json"]) {
    if (!ctype.startsWith("application/json")) return fail(`${method} ${url}: ${ctype}, documented JSON`);
    let body;
    try {
      body = JSON.parse(text);
    } catch (e) {
      return fail(`${method} ${url}: not JSON: ${text.slice(0, 200)}`);
    }
    const schema = content["application/json"].schema;
    const v = ajv.compile(close(schema));
    if (!v(body)) return fail(`${method} ${url} ${status}: ${ajv.errorsText(v.errors)} in ${text.slice(0, 300)}`);
  } else if (content["text/plain"]) {
    if (!ctype.startsWith("text/plain")) return fail(`${method} ${url}: ${ctype}, documented text/plain`);
  } else if (Object.keys(content).length && !Object.keys(content).some((t) => ctype.startsWith(t))) {
    return fail(`${method} ${url}: ${ctype}, documented ${Object.keys(content).join(", ")}`);
  }
  checked++;
  if (!validated.has(key)) validated.set(key, new Set());
  validated.get(key).add(status);
}

const startServer = (extra) => startServerIn("adb-contract-", extra);
const stopServer = stopServerIn;

async function call(base, method, path, body, want, key) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key) headers.authorization = "Bearer " + key;
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  validate(method, path, r.status, r.headers.get("content-type") || "", text);
  if (want !== undefined && r.status !== want) fail(`${method} ${path}: ${r.status}, expected ${want}: ${text.slice(0, 300)}`);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function scenario(base) {
  const c = (m, p, b, w) => call(base, m, p, b, w);
  await c("GET", "/healthz", undefined, 200);
  await c("GET", "/readyz", undefined, 200);
  await c("PUT", "/v1/agents/shop", { context_keys: ["device"], embedding_dim: 4 }, 200);
  await c("PUT", "/v1/agents/other", {}, 200);
  await c("GET", "/v1/agents/shop", undefined, 200);
  const page = await c("GET", "/v1/agents?limit=1", undefined, 200);
  if (page.next !== "other") fail(`first page of one: next ${page.next}, expected "other"`);
  await c("GET", "/v1/agents?limit=1&after=other", undefined, 200);
  await c("GET", "/v1/agents?limit=0", undefined, 400);
  await c("PUT", "/v1/agents/shop/actions/item-1", { metadata: { genre: "drama" } }, 200);
  await c("POST", "/v1/agents/shop/actions", { actions: [{ id: "item-2" }, { id: "item-3", disabled: true }] }, 200);
  await c("GET", "/v1/agents/shop/actions", undefined, 200);
  await c("GET", "/v1/agents/nope/actions", undefined, 404);
  const d = await c("POST", "/v1/agents/shop/decide", { user_id: "u1", candidates: ["item-1", "item-2"], context: { device: "tv" }, k: 2 }, 200);
  await c("POST", "/v1/agents/shop/decide", { user_id: "u1", candidates: [] }, 400);
  await c("POST", "/v1/agents/nope/decide", { user_id: "u1", candidates: ["a"] }, 404);
  await c("POST", "/v1/agents/shop/rewards", { reward_id: "r1", event_id: d.event_id, reward: 1 }, 200);
  await c("POST", "/v1/agents/shop/rewards", { reward_id: "r1", event_id: d.event_id, reward: 1 }, 200);
  await c("POST", "/v1/agents/shop/rewards", { reward_id: "r1", event_id: d.event_id, reward: 0 }, 409);
  await c("POST", "/v1/agents/shop/rewards", { reward_id: "r2", user_id: "u2", action: "item-2", context: { device: "tv" }, signals: { watch_time_s: 30, duration_s: 60, clicked: true, rating: 4 } }, 200);
  await c("POST", "/v1/agents/shop/episodes", { episodes: [{ episode_id: "e1", user_id: "u1", session_id: "s1", embedding: [0.1, 0.2, 0.3, 0.4], action: "item-1", reward: 1, context: { device: "tv" } }] }, 200);
  await c("POST", "/v1/agents/shop/episodes/search", { embedding: [0.1, 0.2, 0.3, 0.4], k: 3, user_id: "u1" }, 200);
  await c("POST", "/v1/agents/shop/episodes/search", { embedding: [0.1, 0.2], k: 3 }, 400);
  await c("GET", `/v1/agents/shop/policies/u1?state_key=${d.state_key}`, undefined, 200);
  await c("GET", `/v1/agents/shop/policies/*?state_key=${d.state_key}`, undefined, 200);
  await c("PUT", "/v1/agents/shop/patterns/p1", { type: "co-watch", key: "genre:drama", value: { next: ["item-2"] }, confidence: 0.8, support: 4, embedding: [0, 0, 1, 0] }, 200);
  await c("GET", "/v1/agents/shop/patterns/p1", undefined, 200);
  await c("GET", "/v1/agents/shop/patterns/p2", undefined, 404);
  await c("POST", "/v1/agents/shop/patterns/search", { embedding: [0, 0, 1, 0], k: 2 }, 200);
  await c("PUT", "/v1/users/u1/state", { embedding: [0.5, 0.5, 0, 0], context: { tz: "CET" } }, 200);
  await c("GET", "/v1/users/u1/state", undefined, 200);
  await c("GET", "/v1/users/nobody/state", undefined, 404);
  await c("POST", "/v1/users/search", { embedding: [0.5, 0.5, 0, 0], k: 2 }, 200);
  await c("PUT", "/v1/sessions/s1", { context: { page: "home" }, ttl_s: 60 }, 200);
  await c("GET", "/v1/sessions/s1", undefined, 200);
  await c("DELETE", "/v1/sessions/s1", undefined, 200);
  await c("GET", "/v1/sessions/s1", undefined, 404);
  // The rollups behind the counters and the agent metrics are written
  // about once a second.
  await new Promise((r) => setTimeout(r, 1500));
  await c("GET", "/v1/agents/shop", undefined, 200);
  await c("GET", "/v1/agents/shop/metrics", undefined, 200);
  await c("GET", "/v1/agents/shop/metrics?from=x", undefined, 400);
  await c("GET", "/v1/agents/shop/log?format=csv", undefined, 200);
  await c("GET", "/v1/agents/shop/log?from=1", undefined, 200);
  await c("GET", "/v1/agents/shop/log?format=xml", undefined, 400);
  await c("GET", "/v1/agents/nosuch/log", undefined, 404);
  await c("GET", "/metrics", undefined, 200);
  await c("GET", "/", undefined, 200);
  await c("GET", "/dashboard/", undefined, 200);
  await c("GET", "/dashboard/app.js", undefined, 200);
  await c("GET", "/dashboard/nothing.js", undefined, 404);
  await c("GET", "/v1/dashboard/overview", undefined, 200);
  await c("GET", "/v1/dashboard/recent?limit=5", undefined, 200);
  await c("GET", "/v1/dashboard/agents/shop/series?minutes=5&hours=2", undefined, 200);
  await c("GET", "/v1/dashboard/agents/shop/inspect/u1", undefined, 200);
  const ev = await c("POST", "/v1/agents/shop/evaluations", { policies: [{ name: "lin", algorithm: "linear" }] }, 202);
  await c("POST", "/v1/agents/shop/evaluations", { policies: [] }, 400);
  let evs = ev;
  for (let i = 0; i < 100 && evs.status === "running"; i++) {
    await new Promise((r) => setTimeout(r, 100));
    evs = await c("GET", `/v1/agents/shop/evaluations/${ev.id}`, undefined, 200);
  }
  if (evs.status !== "done" || !evs.result || evs.result.rows !== 1)
    fail(`evaluation of the shop log: ${JSON.stringify(evs)}`);
  await c("GET", "/v1/agents/shop/evaluations", undefined, 200);
  await c("DELETE", `/v1/agents/shop/evaluations/${ev.id}`, undefined, 200);
  await c("GET", `/v1/agents/shop/evaluations/${ev.id}`, undefined, 404);
  const u = await c("GET", "/v1/users/u1", undefined, 200);
  if (!u.data || u.data.decisions !== 1 || !u.data.state) fail(`GET /v1/users/u1: ${JSON.stringify(u)}`);
  await c("DELETE", "/v1/agents/shop/actions/item-3", undefined, 200);
  await c("DELETE", "/v1/agents/shop/actions/item-3", undefined, 404);
  await c("POST", "/v1/agents/shop/reset", {}, 200);
  await c("POST", "/v1/agents/shop/reset", { x: 1 }, 400);
  const e = await c("DELETE", "/v1/users/u1", undefined, 200);
  if (!e.erased || e.erased.episodes !== 0) fail(`DELETE /v1/users/u1 after reset: ${JSON.stringify(e)}`);
  await c("DELETE", "/v1/users/u2", undefined, 200);
  await c("DELETE", "/v1/agents/shop", undefined, 200);
  await c("DELETE", "/v1/agents/shop", undefined, 404);
  await c("GET", "/v1/agents/shop", undefined, 404);
}

async function scopes(base) {
  const k = (m, p, b, w, key) => call(base, m, p, b, w, key);
  await k("GET", "/v1/agents", undefined, 401);
  await k("PUT", "/v1/agents/mine", {}, 200, "admin-key");
  await k("PUT", "/v1/agents/theirs", {}, 200, "admin-key");
  const l = await k("GET", "/v1/agents", undefined, 200, "scoped-key");
  if (l.agents.length !== 1 || l.agents[0].id !== "mine") fail(`a scoped key lists ${JSON.stringify(l.agents.map((a) => a.id))}`);
  await k("GET", "/v1/users/u1", undefined, 403, "scoped-key");
  await k("DELETE", "/v1/users/u1", undefined, 403, "scoped-key");
  await k("DELETE", "/v1/agents/theirs", undefined, 404, "scoped-key");
  await k("DELETE", "/v1/users/u1", undefined, 200, "admin-key");
}

let s = await startServer(() => []);
try {
  await scenario(s.url);
} finally {
  await stopServer(s);
}
s = await startServer((dir) => {
  writeFileSync(join(dir, "keys"), "admin-key\nscoped-key mine\n");
  return ["--api-keys-file", join(dir, "keys")];
});
try {
  await scopes(s.url);
} finally {
  await stopServer(s);
}

for (const [k, { op }] of specOps) {
  const seen = validated.get(k);
  if (!seen || ![...seen].some((x) => x >= 200 && x < 300)) fail(`never validated with a 2xx answer: ${k} (${op.operationId})`);
}
console.log(`responses validated: ${checked}; operations covered: ${validated.size}/${specOps.size}`);
if (failures.length) {
  console.error(`${failures.length} contract failure(s)`);
  process.exit(1);
}
console.log("contract: ok");
