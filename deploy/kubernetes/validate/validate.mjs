// validate.mjs — offline validation of the Kubernetes manifests.
//
//   node validate.mjs --bin path/to/agentdb [--kubectl auto|off] DIR...
//
// Each DIR is a kustomization (deploy/kubernetes/base, .../overlays/...).
// For each it
//  1. renders it with a small kustomize of our own (resources, namespace,
//     images, strategic-merge patches including $patch: delete): kustomize
//     is not packaged for Debian 12. When `kubectl kustomize` is on the
//     PATH the two renderings must agree object for object.
//  2. validates every object against the Kubernetes API schema of the
//     kubernetes-models package (types, required fields, enums), and finds
//     unknown fields, which that schema lets through, by probing: a field
//     the schema knows rejects the value [[]]; an unknown one does not.
//  3. cross-checks the objects with each other and with the real binary:
//     every AGENTDB_* variable and every flag an agentdb container uses is
//     in `agentdb <command> --help`; the settings are accepted by `agentdb
//     serve` started with them, which must answer 200 on every probe path
//     (and the scrape path); probe ports, Service target ports and the
//     listen address agree; selectors match the pod labels; secret and
//     config references resolve; one image name and a tag equal to the
//     binary's version; non-root, read-only root filesystem; a grace
//     period covering the drain; the Deployment waits for the schema.
// Prints one line per problem ("PROBLEM DIR: ...") and exits 1 if there is
// any. (Every rendering's image tag must equal the binary's version, so
// the renderings agree with each other too.)
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import http from "node:http";
import { execFileSync, spawn } from "node:child_process";
import { pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import YAML from "yaml";

const problems = [];
const problem = (where, msg) => problems.push(`${where}: ${msg}`);
const clone = (o) => JSON.parse(JSON.stringify(o));
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const id = (o) => `${o.kind}/${o.metadata?.name}`;

// ------------------------------------------------------------- rendering

function loadDocs(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      return d.toJSON();
    })
    .filter((o) => o !== null && o !== undefined);
}

// Strategic-merge-patch list keys (the lists of these names merge by key;
// every other list is replaced, as in Kubernetes' patchMergeKey).
function mergeKey(field, items) {
  if (["containers", "initContainers", "env", "volumes",
       "imagePullSecrets"].includes(field)) return "name";
  if (field === "volumeMounts") return "mountPath";
  if (field === "ports")
    return items.some((i) => isObj(i) && "containerPort" in i)
      ? "containerPort" : "port";
  return null;
}

function smp(base, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete base[k];
    else if (isObj(v) && isObj(base[k])) smp(base[k], v);
    else if (Array.isArray(v) && Array.isArray(base[k]) && mergeKey(k, v)) {
      const key = mergeKey(k, v);
      for (const item of v) {
        const at = base[k].find((b) => isObj(b) && b[key] === item[key]);
        if (at) smp(at, item);
        else base[k].push(clone(item));
      }
    } else base[k] = clone(v);
  }
  return base;
}

const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole",
  "ClusterRoleBinding", "PersistentVolume", "StorageClass"]);

function podSpecs(o) {
  const t = o.spec?.template?.spec ?? o.spec?.jobTemplate?.spec?.template?.spec;
  return t ? [t] : [];
}
const containersOf = (ps) => [...(ps.initContainers ?? []), ...(ps.containers ?? [])];

function splitImage(image) {
  const slash = image.lastIndexOf("/");
  const colon = image.lastIndexOf(":");
  return colon > slash
    ? { name: image.slice(0, colon), tag: image.slice(colon + 1) }
    : { name: image, tag: "" };
}

function render(dir) {
  const kfile = path.join(dir, "kustomization.yaml");
  const k = YAML.parse(fs.readFileSync(kfile, "utf8"));
  const known = new Set(["apiVersion", "kind", "namespace", "resources",
                         "images", "patches"]);
  for (const f of Object.keys(k))
    if (!known.has(f))
      throw new Error(`${kfile}: field '${f}' is not supported by this renderer`);
  let out = [];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    out.push(...(fs.statSync(p).isDirectory() ? render(p) : loadDocs(p)));
  }
  for (const p of k.patches ?? []) {
    if (!p.path || Object.keys(p).length !== 1)
      throw new Error(`${kfile}: only 'patches: - path: FILE' is supported`);
    for (const doc of loadDocs(path.join(dir, p.path))) {
      const del = doc.$patch === "delete";
      delete doc.$patch;
      const i = out.findIndex((o) => o.kind === doc.kind &&
        o.apiVersion === doc.apiVersion && o.metadata.name === doc.metadata.name);
      if (i < 0) throw new Error(`${p.path}: no ${id(doc)} to patch`);
      if (del) out.splice(i, 1);
      else smp(out[i], doc);
    }
  }
  if (k.namespace)
    for (const o of out)
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  for (const img of k.images ?? [])
    for (const o of out)
      for (const ps of podSpecs(o))
        for (const c of containersOf(ps)) {
          const { name, tag } = splitImage(c.image);
          if (name !== img.name) continue;
          c.image = `${img.newName ?? name}${img.newTag ?? tag ? ":" : ""}${img.newTag ?? tag}`;
        }
  return out;
}

function compareWithKubectl(dir, mine, mode) {
  if (mode === "off") return "not compared (--kubectl off)";
  let text;
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
  } catch {
    return "not compared (kubectl not installed)";
  }
  text = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
  const theirs = YAML.parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean);
  const key = (o) => `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? ""} ${o.metadata.name}`;
  const a = new Map(mine.map((o) => [key(o), o]));
  const b = new Map(theirs.map((o) => [key(o), o]));
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    if (!a.has(k)) problem(dir, `kubectl kustomize renders ${k}, this renderer does not`);
    else if (!b.has(k)) problem(dir, `this renderer renders ${k}, kubectl kustomize does not`);
    else if (JSON.stringify(sortKeys(a.get(k))) !== JSON.stringify(sortKeys(b.get(k))))
      problem(dir, `${k} differs from kubectl kustomize's rendering`);
  }
  return `agrees with kubectl kustomize (${theirs.length} objects)`;
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (!isObj(v)) return v;
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
}

// --------------------------------------------------------------- schemas

const require = createRequire(import.meta.url);
const modelsDir = path.dirname(require.resolve("kubernetes-models/package.json"));

async function schemaOf(o) {
  const api = o.apiVersion ?? "";
  const file = path.join(modelsDir, api, `${o.kind}.mjs`);
  if (!/^[A-Za-z0-9.\/]+$/.test(api) || !fs.existsSync(file)) return null;
  const m = /from"((?:\.\.\/)+_schemas\/\w+\.mjs)"/.exec(fs.readFileSync(file, "utf8"));
  if (!m) return null;
  const mod = await import(pathToFileURL(path.resolve(path.dirname(file), m[1])).href);
  return mod.validate;
}

const ptr = (parts) => parts.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");

function schemaErrors(validate, o) {
  return validate(o) ? [] : validate.errors ?? [{ instancePath: "", keyword: "?" }];
}

// Fields the schema does not know: replacing a known field's value by
// [[]] makes the schema complain at (or under) its path.
function unknownFields(validate, root) {
  const found = [];
  const walk = (node, parts) => {
    if (Array.isArray(node)) return node.forEach((v, i) => walk(v, [...parts, i]));
    if (!isObj(node)) return;
    for (const k of Object.keys(node)) {
      const here = ptr([...parts, k]);
      const saved = node[k];
      node[k] = [[]];
      const errs = schemaErrors(validate, root);
      node[k] = saved;
      if (!errs.some((e) => e.instancePath === here || e.instancePath.startsWith(here + "/")))
        found.push(here);
      else walk(saved, [...parts, k]);
    }
  };
  walk(root, []);
  return found;
}

async function checkSchemas(where, objs) {
  for (const o of objs) {
    const validate = await schemaOf(o);
    if (!validate) {
      problem(where, `${id(o)}: no Kubernetes schema for apiVersion '${o.apiVersion}' kind '${o.kind}'`);
      continue;
    }
    for (const e of schemaErrors(validate, o))
      problem(where, `${id(o)}: schema: ${e.instancePath || "/"} ${e.keyword} ${JSON.stringify(e.params ?? {})}`);
    for (const f of unknownFields(validate, clone(o)))
      problem(where, `${id(o)}: schema: unknown field ${f}`);
  }
}

// ---------------------------------------------------------- cross-checks

const helpCache = new Map();
function help(bin, cmd) {
  if (!helpCache.has(cmd)) {
    let text = "";
    try {
      text = execFileSync(bin, cmd ? [cmd, "--help"] : ["--help"], { encoding: "utf8" });
    } catch (e) {
      text = "";
    }
    helpCache.set(cmd, text);
  }
  return helpCache.get(cmd);
}

function find(objs, kind, name) {
  return objs.find((o) => o.kind === kind && (!name || o.metadata.name === name));
}

function secretValue(s, key) {
  if (s?.stringData && key in s.stringData) return s.stringData[key];
  if (s?.data && key in s.data) return Buffer.from(s.data[key], "base64").toString();
  return undefined;
}

// The environment a container sees: name -> value (undefined if unknown).
function envOf(where, objs, c) {
  const env = new Map();
  for (const ef of c.envFrom ?? []) {
    if (ef.configMapRef) {
      const cm = find(objs, "ConfigMap", ef.configMapRef.name);
      if (!cm) problem(where, `${c.name}: envFrom ConfigMap ${ef.configMapRef.name} does not exist`);
      for (const [k, v] of Object.entries(cm?.data ?? {})) env.set(k, v);
    }
    if (ef.secretRef) {
      const s = find(objs, "Secret", ef.secretRef.name);
      if (!s) problem(where, `${c.name}: envFrom Secret ${ef.secretRef.name} does not exist`);
      for (const k of Object.keys({ ...s?.stringData, ...s?.data })) env.set(k, secretValue(s, k));
    }
  }
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
    if (!ref) { env.set(e.name, e.value); continue; }
    const kind = e.valueFrom.secretKeyRef ? "Secret" : "ConfigMap";
    const o = find(objs, kind, ref.name);
    const v = kind === "Secret" ? secretValue(o, ref.key) : o?.data?.[ref.key];
    if (v === undefined)
      problem(where, `${c.name}: ${e.name} refers to ${kind} ${ref.name} key ${ref.key}, which does not exist`);
    env.set(e.name, v);
  }
  return env;
}

function portOf(c, p) {
  const cp = (c.ports ?? []).find((x) => x.name === p || x.containerPort === p);
  return cp?.containerPort;
}

const matches = (sel, labels) =>
  Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels?.[k] === v);

function checkAgentdbContainer(where, objs, o, ps, c, bin, version, images) {
  const w = `${where}: ${id(o)} container ${c.name}`;
  const { name, tag } = splitImage(c.image);
  images.add(c.image);
  if (tag !== version) problem(w, `image tag '${tag}' is not the binary's version ${version}`);
  const cmd = (c.args ?? [])[0];
  const top = help(bin, "");
  if (c.command) problem(w, "sets command: the image's entrypoint is agentdb, give args");
  if (!cmd || !new RegExp(`^\\s+${cmd}\\s`, "m").test(top))
    return problem(w, `args[0] '${cmd}' is not an agentdb command`);
  const h = help(bin, cmd);
  for (const a of c.args.slice(1))
    if (a.startsWith("--") && !h.includes(a.split("=")[0] + " ") && !h.includes(a.split("=")[0] + "\n"))
      problem(w, `flag ${a} is not in 'agentdb ${cmd} --help'`);
  const env = envOf(w, objs, c);
  for (const k of env.keys())
    if (!/^AGENTDB_[A-Z0-9_]+$/.test(k) || !h.includes(k))
      problem(w, `environment variable ${k} is not in 'agentdb ${cmd} --help'`);
  const sc = c.securityContext ?? {};
  if (sc.readOnlyRootFilesystem !== true) problem(w, "root filesystem not read-only");
  if (sc.allowPrivilegeEscalation !== false) problem(w, "allows privilege escalation");
  if (ps.securityContext?.runAsNonRoot !== true) problem(w, "pod not runAsNonRoot");
  if (!c.resources?.requests || !c.resources?.limits?.memory) problem(w, "no resource requests / memory limit");
  return { cmd, env };
}

function checkServe(where, objs, dep, c, env) {
  const w = `${where}: ${id(dep)} container ${c.name}`;
  const listen = env.get("AGENTDB_LISTEN") ?? "127.0.0.1:8080";
  const lport = Number(listen.split(":").pop());
  if (listen.startsWith("127.") || listen.startsWith("localhost"))
    problem(w, `AGENTDB_LISTEN ${listen} is loopback: unreachable from the Service`);
  if (!(c.ports ?? []).some((p) => p.containerPort === lport))
    problem(w, `no containerPort for the listen port ${lport}`);
  const want = { readinessProbe: "/readyz", livenessProbe: "/healthz" };
  for (const [probe, p] of Object.entries(want)) {
    const g = c[probe]?.httpGet;
    if (!g) { problem(w, `no ${probe} httpGet`); continue; }
    if (g.path !== p) problem(w, `${probe} path ${g.path} is not ${p}`);
    if (portOf(c, g.port) !== lport) problem(w, `${probe} port ${g.port} is not the listen port ${lport}`);
  }
  const ps = dep.spec.template.spec;
  const stopMs = Number(env.get("AGENTDB_SHUTDOWN_TIMEOUT_MS") ?? 30000) +
                 Number(env.get("AGENTDB_WRITE_TIMEOUT_MS") ?? 30000);
  const pre = c.lifecycle?.preStop?.exec?.command;
  const preS = pre && pre[0] === "sleep" ? Number(pre[1]) : 0;
  const grace = ps.terminationGracePeriodSeconds ?? 30;
  if (grace * 1000 < preS * 1000 + stopMs)
    problem(w, `terminationGracePeriodSeconds ${grace} < preStop ${preS}s + shutdown and write timeouts ${stopMs / 1000}s`);
  const keys = env.get("AGENTDB_API_KEYS_FILE");
  if (keys) {
    const vm = (c.volumeMounts ?? []).find((m) => path.dirname(keys) === m.mountPath);
    const vol = (ps.volumes ?? []).find((v) => v.name === vm?.name);
    const item = vol?.secret?.items?.find((i) => i.path === path.basename(keys));
    const s = find(objs, "Secret", vol?.secret?.secretName);
    if (!item || secretValue(s, item.key) === undefined)
      problem(w, `AGENTDB_API_KEYS_FILE ${keys} is not a mounted secret key`);
  }
  const waits = (ps.initContainers ?? []).some((i) => i.args?.[0] === "migrate" && i.args.includes("--wait"));
  if (!waits) problem(w, "no init container waiting for the schema (agentdb migrate --wait)");
  const labels = dep.spec.template.metadata?.labels;
  if (!matches(dep.spec.selector, labels)) problem(w, "selector does not match the pod labels");
  for (const svc of objs.filter((o) => o.kind === "Service" && matches({ matchLabels: o.spec.selector }, labels)))
    for (const sp of svc.spec.ports ?? [])
      if (portOf(c, sp.targetPort ?? sp.port) !== lport)
        problem(w, `Service ${svc.metadata.name} targetPort ${sp.targetPort} is not the listen port`);
  if (!objs.some((o) => o.kind === "Service" && matches({ matchLabels: o.spec.selector }, labels)))
    problem(w, "no Service selects the pods");
  const pdb = find(objs, "PodDisruptionBudget");
  if (!pdb || !matches(pdb.spec.selector, labels)) problem(w, "no PodDisruptionBudget selects the pods");
  const hpa = find(objs, "HorizontalPodAutoscaler");
  if (!hpa || hpa.spec.scaleTargetRef.name !== dep.metadata.name || hpa.spec.scaleTargetRef.kind !== "Deployment")
    problem(w, "no HorizontalPodAutoscaler scales the Deployment");
  else if (pdb && hpa.spec.minReplicas <= pdb.spec.minAvailable)
    problem(w, `HPA minReplicas ${hpa.spec.minReplicas} leaves no disruption allowed by minAvailable ${pdb.spec.minAvailable}`);
  const np = objs.filter((o) => o.kind === "NetworkPolicy" && matches(o.spec.podSelector, labels));
  if (!np.some((n) => (n.spec.ingress ?? []).some((r) => (r.ports ?? []).some((p) => p.port === lport || p.port === "http"))))
    problem(w, `no NetworkPolicy admits the listen port ${lport}`);
  const annot = dep.spec.template.metadata?.annotations ?? {};
  const paths = [c.readinessProbe?.httpGet?.path, c.livenessProbe?.httpGet?.path,
                 c.startupProbe?.httpGet?.path, annot["prometheus.io/path"]];
  return { lport, paths: [...new Set(paths.filter(Boolean))] };
}

// Starts the real binary with the container's settings (store, cache,
// listen and keys replaced by local ones) and GETs each path.
async function probeBinary(where, bin, env, paths, keysText) {
  const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR ?? os.tmpdir(), "agentdb-manifest-"));
  const e = { ...process.env };
  for (const [k, v] of env) if (v !== undefined) e[k] = v;
  Object.assign(e, {
    AGENTDB_LISTEN: "127.0.0.1:0",
    AGENTDB_STORE: `sqlite://${tmp}/agentdb.db`,
    AGENTDB_CACHE: "mem://",
  });
  if (e.AGENTDB_API_KEYS_FILE) {
    fs.writeFileSync(path.join(tmp, "keys"), keysText ?? "");
    e.AGENTDB_API_KEYS_FILE = path.join(tmp, "keys");
  }
  const child = spawn(bin, ["serve"], { env: e, stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise((r) => child.on("exit", r));
  const addr = await Promise.race([
    new Promise((resolve) => {
      const t = setInterval(() => {
        const m = /listening on http:\/\/([0-9.]+:[0-9]+)/.exec(out);
        if (m) { clearInterval(t); resolve(m[1]); }
      }, 20);
    }),
    exited.then(() => null),
    new Promise((r) => setTimeout(() => r(null), 15000)),
  ]);
  try {
    if (!addr) return problem(where, `agentdb serve does not start with these settings: ${err.trim().split("\n").pop()}`);
    for (const p of paths) {
      const status = await new Promise((resolve) => {
        http.get(`http://${addr}${p}`, { agent: false, headers: { Connection: "close" } }, (r) => { r.resume(); resolve(r.statusCode); })
          .on("error", () => resolve(0));
      });
      if (status !== 200) problem(where, `agentdb serve answers ${status} on ${p}`);
    }
  } finally {
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
    child.kill("SIGKILL");
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function crossCheck(where, objs, bin, version) {
  const ns = find(objs, "Namespace");
  if (!ns) problem(where, "no Namespace");
  for (const o of objs)
    if (!CLUSTER_SCOPED.has(o.kind) && o.metadata.namespace !== ns?.metadata.name)
      problem(where, `${id(o)} is not in namespace ${ns?.metadata.name}`);
  for (const kind of ["Secret", "ConfigMap", "Job", "Deployment", "Service",
                      "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"])
    if (!find(objs, kind)) problem(where, `no ${kind}`);
  const images = new Set();
  let migrateJob = false;
  for (const o of objs)
    for (const ps of podSpecs(o))
      for (const c of containersOf(ps)) {
        if (splitImage(c.image).name.split("/").pop() !== "agentdb") continue;
        const r = checkAgentdbContainer(where, objs, o, ps, c, bin, version, images);
        if (!r) continue;
        if (o.kind === "Job" && r.cmd === "migrate") migrateJob = true;
        if (o.kind === "Deployment" && r.cmd === "serve") {
          if (o.spec.replicas < 3) problem(where, `${id(o)}: fewer than 3 replicas`);
          const s = checkServe(where, objs, o, c, r.env);
          const keysRef = ps.volumes?.find((v) => v.secret)?.secret;
          const keys = keysRef && secretValue(find(objs, "Secret", keysRef.secretName), keysRef.items?.[0]?.key);
          await probeBinary(`${where}: ${id(o)}`, bin, r.env, s.paths, keys);
          checkDatastores(where, objs, r.env);
        }
      }
  if (!migrateJob) problem(where, "no Job runs agentdb migrate");
  if (images.size !== 1) problem(where, `agentdb containers use ${images.size} images: ${[...images].join(", ")}`);
  return [...images][0];
}

// The store URL names the bundled PostgreSQL with its user and password,
// or (no bundled one) a server outside the namespace.
function checkDatastores(where, objs, env) {
  const store = env.get("AGENTDB_STORE") ?? "";
  const cache = env.get("AGENTDB_CACHE") ?? "";
  let u;
  try { u = new URL(store); } catch { return problem(where, `AGENTDB_STORE '${store}' is not a URL`); }
  if (!/^postgres(ql)?:$/.test(u.protocol)) problem(where, "AGENTDB_STORE is not a PostgreSQL URL (replicas share one store)");
  if (!/^redis(-cluster)?:\/\//.test(cache)) problem(where, "AGENTDB_CACHE is not Redis (replicas share one cache)");
  const pg = find(objs, "StatefulSet", u.hostname);
  if (pg) {
    const c = pg.spec.template.spec.containers[0];
    const e = envOf(where, objs, c);
    if (e.get("POSTGRES_USER") !== decodeURIComponent(u.username) ||
        e.get("POSTGRES_PASSWORD") !== decodeURIComponent(u.password) ||
        e.get("POSTGRES_DB") !== u.pathname.slice(1))
      problem(where, "AGENTDB_STORE's user, password or database differ from the PostgreSQL StatefulSet's");
    if (!find(objs, "Service", u.hostname)) problem(where, `no Service ${u.hostname}`);
  } else if (find(objs, "Service", u.hostname)) {
    problem(where, `Service ${u.hostname} has no StatefulSet`);
  }
  const rhost = cache.replace(/^redis(-cluster)?:\/\//, "").split(/[:,/]/)[0];
  if (find(objs, "Service", rhost) && !find(objs, "StatefulSet", rhost))
    problem(where, `Service ${rhost} has no StatefulSet`);
  if (!find(objs, "Service", rhost) && !rhost.includes("."))
    problem(where, `AGENTDB_CACHE host ${rhost} is neither a Service here nor a DNS name`);
}

// ------------------------------------------------------------------ main

async function main() {
  const args = process.argv.slice(2);
  let bin = null, kubectl = "auto";
  const dirs = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--bin") bin = args[++i];
    else if (args[i] === "--kubectl") kubectl = args[++i];
    else dirs.push(args[i]);
  }
  if (!bin || !dirs.length) {
    console.error("usage: node validate.mjs --bin AGENTDB [--kubectl auto|off] DIR...");
    process.exit(2);
  }
  const version = execFileSync(bin, ["version"], { encoding: "utf8" }).trim().split(" ").pop();
  // Renderings are checked four at a time (each starts the binary once).
  const lines = new Map();
  const one = async (dir) => {
    let objs;
    try {
      objs = render(dir);
    } catch (e) {
      return problem(dir, `cannot render: ${e.message}`);
    }
    const mine = () => problems.filter((p) => p.startsWith(`${dir}:`)).length;
    const cmp = compareWithKubectl(dir, objs, kubectl);
    await checkSchemas(dir, objs);
    await crossCheck(dir, objs, bin, version);
    lines.set(dir, `${dir}: ${objs.length} objects (${objs.map((o) => o.kind).sort().join(", ")}); rendering ${cmp}; ${mine()} problems`);
  };
  const queue = [...dirs];
  await Promise.all([1, 2, 3, 4].map(async () => {
    while (queue.length) await one(queue.shift());
  }));
  for (const dir of dirs) if (lines.has(dir)) console.log(lines.get(dir));
  for (const p of problems) console.log(`PROBLEM ${p}`);
  console.log(problems.length ? `manifests: ${problems.length} problems` : "manifests: valid");
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
