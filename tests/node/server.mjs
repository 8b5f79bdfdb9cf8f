// The real `agentdb serve` ($ADB_BIN, else build/agentdb) for the node
// tests: started on a free loopback port, stopped with SIGTERM.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.ADB_BIN || join(root, "build", "agentdb");

// Starts the server on a new temporary folder (prefix), or on opts.dir
// (kept by stopServer), over opts.store (default: a SQLite file in the
// folder), with the arguments extra(dir) and opts.args. Resolves to
// {url, proc, dir, store, keep, err()} once it listens.
export function startServer(prefix, extra = () => [], opts = {}) {
  const dir = opts.dir || mkdtempSync(join(tmpdir(), prefix));
  const store = opts.store || `sqlite://${dir}/agentdb.db`;
  const args = ["serve", "--listen", "127.0.0.1:0", "--store", store, ...(opts.args || []), ...extra(dir)];
  const p = spawn(BIN, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  p.stderr.on("data", (d) => (err += d));
  return new Promise((res, rej) => {
    let out = "";
    const t = setTimeout(() => rej(new Error("no 'listening on' within 30 s: " + err)), 30000);
    p.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s,]+)/);
      if (m) {
        clearTimeout(t);
        res({ url: m[1], proc: p, dir, store, keep: !!opts.dir, err: () => err });
      }
    });
    p.on("exit", (c) => rej(new Error(`agentdb serve exited ${c}: ${err}`)));
  });
}

// Stops the server (SIGTERM) and removes its folder unless kept. Resolves
// to an error message when it exited non-zero (a sanitizer's report), else
// null.
export async function stopServer(s) {
  const done = new Promise((r) => s.proc.on("exit", (code, sig) => r({ code, sig })));
  s.proc.kill("SIGTERM");
  const { code, sig } = await done;
  if (!s.keep) rmSync(s.dir, { recursive: true, force: true });
  return code === 0 ? null : `agentdb serve exited ${code ?? sig}: ${s.err().slice(-3000)}`;
}
