// browser.mjs — the dashboard in a real browser (Debian's chromium, headless,
// driven by playwright-core): starts `agentdb serve` with an API key, runs
// a short simulated workload over HTTP, then opens every page and checks
// that charts render with data (non-empty canvas, axis labels, points),
// that the numbers shown match the JSON routes, that the policy inspector
// answers for a real user, that a finished offline evaluation shows its
// estimates as its JSON route has them, that the page refreshes without a
// reload, that there are no console errors, and that a wrong key shows the
// login prompt and no data. Saves a screenshot of each page under $ADB_ARTIFACTS and
// prints the page weight (HTML + JS + CSS, gzip). Run by run.sh.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(process.env.ADB_NODE_MODULES + '/');
const { chromium } = require('playwright-core');

const BIN = process.env.ADB_BIN;
const ART = process.env.ADB_ARTIFACTS;
const KEY = 'dash-test-key-' + process.pid;
const WEIGHT_LIMIT = 150 * 1024;
fs.mkdirSync(ART, { recursive: true });

let passed = 0, failed = 0;
function check(ok, what) {
  if (ok) { passed++; console.log('ok   ' + what); }
  else { failed++; console.log('FAIL ' + what); }
}

/* ------------------------------------------------------------ server */

const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'adb-dash-'));
fs.writeFileSync(path.join(tmp, 'keys'), KEY + '\n');
const srv = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--store',
  'sqlite://' + path.join(tmp, 'db.sqlite'), '--threads', '2',
  '--api-keys-file', path.join(tmp, 'keys')], { stdio: ['ignore', 'pipe', 'inherit'] });
const base = await new Promise((resolve, reject) => {
  let out = '';
  const t = setTimeout(() => reject(new Error("server did not start: " + out)), 60000);
  srv.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
    if (m) { clearTimeout(t); resolve(m[1]); }
  });
  srv.on('exit', (c) => reject(new Error('server exited ' + c)));
});
srv.stdout.resume();
console.log('server at ' + base);

async function call(method, p, body, key = KEY) {
  const r = await fetch(base + p, {
    method, body: body ? JSON.stringify(body) : undefined,
    headers: key ? { Authorization: 'Bearer ' + key } : {},
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

/* ---------------------------------------------------------- workload */

// Two agents; users prefer one action per device, with seeded noise, so
// the mean reward rises as the agent learns.
let seed = 7;
function rnd() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; }
const agents = { movies: ['m1', 'm2', 'm3', 'm4'], news: ['n1', 'n2', 'n3'] };
for (const [a, acts] of Object.entries(agents)) {
  const r = await call('PUT', '/v1/agents/' + a, { context_keys: ['device'] });
  check(r.status === 200 || r.status === 201, 'create agent ' + a + ' (' + r.status + ')');
  await call('POST', '/v1/agents/' + a + '/actions', { actions: acts.map((id) => ({ id })) });
}
let rounds = 0;
for (let i = 0; i < 240; i++) {
  const a = i % 3 ? 'movies' : 'news', acts = agents[a];
  const device = rnd() < 0.5 ? 'tv' : 'phone';
  const user = 'user-' + Math.floor(rnd() * 8);
  const d = await call('POST', '/v1/agents/' + a + '/decide',
    { user_id: user, candidates: acts, context: { device } });
  if (d.status !== 200) { check(false, 'decide ' + d.status + JSON.stringify(d.json)); break; }
  const best = device === 'tv' ? acts[0] : acts[1];
  const reward = rnd() < (d.json.action === best ? 0.8 : 0.2) ? 1 : 0;
  if (i % 10 !== 9) { // some decisions stay unrewarded
    const r = await call('POST', '/v1/agents/' + a + '/rewards',
      { reward_id: 'r' + i, event_id: d.json.event_id, reward });
    if (r.status !== 200) { check(false, 'reward ' + r.status); break; }
  }
  rounds++;
}
check(rounds === 240, 'workload: ' + rounds + ' decide/reward rounds over HTTP');

const ov = (await call('GET', '/v1/dashboard/overview')).json;
const series = {};
for (const a of Object.keys(agents))
  series[a] = (await call('GET', '/v1/dashboard/agents/' + a + '/series')).json;
const recent = (await call('GET', '/v1/dashboard/recent?limit=50')).json;
check(ov.agents.length === 2, 'overview JSON lists both agents');
const mv = ov.agents.find((x) => x.agent === 'movies');
check(mv && mv.decisions === 160 && mv.rewards === 144, 'movies: 160 decisions, 144 rewards in the JSON');
const minuteSum = series.movies.series.minute.decisions.reduce((s, v) => s + v, 0);
check(minuteSum === 160, 'per-minute decisions add up to the total (' + minuteSum + ')');
const realUser = recent.events.find((e) => e.agent === 'movies').user_id;
const ctx = { device: 'tv' };
const insp = (await call('GET', '/v1/dashboard/agents/movies/inspect/' + realUser +
  '?context=' + encodeURIComponent(JSON.stringify(ctx)))).json;
check(insp.arms.length > 0, 'inspector JSON has arms for ' + realUser);
const probSum = insp.arms.reduce((s, a) => s + a.choice_probability, 0);
check(Math.abs(probSum - 1) < 0.05, 'choice probabilities sum to 1 (' + probSum.toFixed(4) + ')');
// An offline evaluation of the movies log, to be shown on its page.
const evStart = await call('POST', '/v1/agents/movies/evaluations', { policies: [
  { name: 'beta-default', algorithm: 'beta' }, { name: 'linear', algorithm: 'linear', v: 0.2 }] });
check(evStart.status === 202, 'evaluation started (' + evStart.status + ')');
let evDone = null;
for (let i = 0; i < 600 && evStart.status === 202; i++) {
  const r = (await call('GET', '/v1/agents/movies/evaluations/' + evStart.json.id)).json;
  if (r.status !== 'running') { evDone = r; break; }
  await new Promise((res) => setTimeout(res, 100));
}
check(evDone && evDone.status === 'done' && evDone.result.policies.length === 2,
  'evaluation done: ' + (evDone ? evDone.status + ', ' + (evDone.result ? evDone.result.rows : 0) + ' rows' : 'timed out'));
check((await call('GET', '/v1/dashboard/overview', null, 'wrong')).status === 401,
  'the overview route refuses a wrong key');

/* ------------------------------------------------------- page weight */

let raw = 0, gz = 0;
for (const p of ['/', '/dashboard/app.js', '/dashboard/app.css']) {
  const b = Buffer.from(await (await fetch(base + p)).arrayBuffer());
  raw += b.length;
  gz += zlib.gzipSync(b, { level: 9 }).length;
}
console.log(`page weight: ${raw} bytes, ${gz} bytes gzip -9 (limit ${WEIGHT_LIMIT})`);
check(gz < WEIGHT_LIMIT, 'page weight under 150 KB compressed');

/* ----------------------------------------------------------- browser */

const browser = await chromium.launch({
  executablePath: process.env.ADB_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

async function open(key, hash, query = '') {
  const ctxt = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  if (key !== null)
    await ctxt.addInitScript((k) => sessionStorage.setItem('agentdb.key', k), key);
  const page = await ctxt.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/' + query + hash);
  return { page, errors, ctxt };
}

async function loaded(page, name) {
  await page.waitForFunction((n) => document.documentElement.dataset.loaded === n, name, { timeout: 30000 });
}

/* Every chart figure: non-empty canvas, axis labels, points. */
async function checkCharts(page, what, expect) {
  const figs = await page.$$eval('figure.chart', (fs) => fs.map((f) => {
    let ink = 0;
    for (const c of f.querySelectorAll('canvas')) {
      const g = c.getContext('2d'), d = g.getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i]) ink++;
    }
    return { id: f.id, ink, points: +f.dataset.points,
      y: f.querySelector('.ylabel').textContent, x: f.querySelector('.xlabel').textContent };
  }));
  check(figs.length === expect, `${what}: ${figs.length} charts (want ${expect})`);
  for (const f of figs) {
    check(f.ink > 500, `${what}: ${f.id} canvas drawn (${f.ink} inked pixels)`);
    check(f.points > 0, `${what}: ${f.id} has ${f.points} data points`);
    check(f.y.length > 2 && /time/.test(f.x), `${what}: ${f.id} axis labels "${f.y}" / "${f.x}"`);
  }
}

for (const renderer of ['uplot', 'canvas']) {
  const q = renderer === 'canvas' ? '?canvas&refresh=1000' : '?refresh=1000';
  const tag = renderer === 'canvas' ? '-canvas' : '';

  // Overview
  let { page, errors, ctxt } = await open(KEY, '#/', q);
  await loaded(page, 'overview');
  await page.waitForSelector('#chart-overview-reward');
  const got = await page.$eval('html', (h) => h.dataset.renderer);
  const want = renderer === 'uplot' && !process.env.ADB_EXPECT_CANVAS ? 'uplot' : 'canvas';
  check(got === want, `renderer is ${got} (want ${want})`);
  const ovNow = (await call('GET', '/v1/dashboard/overview')).json;
  for (const a of ovNow.agents) {
    const row = await page.$eval(`tr[data-agent="${a.agent}"]`, (tr) => ({
      dec: tr.querySelector('.c-dec').textContent, rew: tr.querySelector('.c-rew').textContent,
      mean: tr.querySelector('.c-mean').textContent }));
    check(row.dec === String(a.decisions) && row.rew === String(a.rewards) &&
      row.mean === a.mean_reward.toFixed(3),
      `overview row ${a.agent}: ${row.dec} decisions, ${row.rew} rewards, mean ${row.mean} match the JSON`);
  }
  await checkCharts(page, 'overview' + tag, 2);
  // Live refresh: one more decision shows up without a reload.
  await call('POST', '/v1/agents/news/decide', { user_id: 'late', candidates: agents.news });
  const newsDec = ovNow.agents.find((x) => x.agent === 'news').decisions + 1;
  const live = await page.waitForFunction((n) => {
    const c = document.querySelector('tr[data-agent="news"] .c-dec');
    return c && c.textContent === String(n);
  }, newsDec, { timeout: 30000 }).then(() => true, () => false);
  check(live, `overview refreshed to ${newsDec} news decisions without a reload`);
  await page.screenshot({ path: path.join(ART, `overview${tag}.png`), fullPage: true });
  check(errors.length === 0, 'overview: no console errors ' + JSON.stringify(errors));
  await ctxt.close();

  // Agent page and the policy inspector
  ({ page, errors, ctxt } = await open(KEY, '#/agent/movies', q));
  await loaded(page, 'agent');
  await page.waitForSelector('#chart-hourly');
  const cards = await page.$eval('#card-decisions b', (b) => b.textContent);
  check(cards === String(series.movies.summary.decisions), `agent card shows ${cards} decisions as the JSON`);
  await checkCharts(page, 'agent' + tag, 4);
  await page.fill('#insp-user', realUser);
  await page.fill('#insp-context', JSON.stringify(ctx));
  await page.click('#insp-form button');
  await page.waitForSelector('#insp tbody tr');
  const rows = await page.$$eval('#insp tbody tr', (trs) => trs.map((tr) => ({
    action: tr.querySelector('.c-action').textContent, mean: tr.querySelector('.c-mean').textContent,
    prob: tr.querySelector('.c-prob').textContent, n: tr.querySelector('.c-n').textContent })));
  const match = rows.length === insp.arms.length && insp.arms.every((a, i) =>
    rows[i].action === a.action && rows[i].mean === a.mean.toFixed(3) &&
    rows[i].prob === a.choice_probability.toFixed(3) && rows[i].n === String(a.n));
  check(match, `inspector for ${realUser}: ${rows.length} actions match the JSON`);
  await page.screenshot({ path: path.join(ART, `agent${tag}.png`), fullPage: true });
  check(errors.length === 0, 'agent: no console errors ' + JSON.stringify(errors));
  await ctxt.close();

  // Recent
  ({ page, errors, ctxt } = await open(KEY, '#/recent', q));
  await loaded(page, 'recent');
  const fresh = (await call('GET', '/v1/dashboard/recent?limit=50')).json.events;
  await page.waitForFunction((id) => {
    const tr = document.querySelector('#recent tbody tr');
    return tr && tr.dataset.event === id;
  }, fresh[0].event_id, { timeout: 30000 });
  const rec = await page.$$eval('#recent tbody tr', (trs) => trs.map((tr) => ({
    ev: tr.dataset.event, prop: tr.querySelector('.c-prop').textContent,
    reward: tr.querySelector('.c-reward').textContent })));
  const e0 = fresh.find((e) => e.reward !== null);
  const r0 = rec.find((r) => r.ev === e0.event_id);
  check(rec.length === fresh.length && r0 && r0.prop === e0.propensity.toFixed(3) &&
    r0.reward === e0.reward.toFixed(3),
    `recent: ${rec.length} rows; ${e0.event_id} shows propensity ${r0 && r0.prop} and reward ${r0 && r0.reward}`);
  await page.screenshot({ path: path.join(ART, `recent${tag}.png`), fullPage: true });
  check(errors.length === 0, 'recent: no console errors ' + JSON.stringify(errors));
  await ctxt.close();
}

// Evaluations: the finished evaluation, its numbers as in the JSON.
{
  const { page, errors, ctxt } = await open(KEY, '#/evaluations');
  await loaded(page, 'evaluations');
  const sel = `.eval[data-eval="${evDone && evDone.id}"]`;
  const shown = await page.waitForSelector(sel, { timeout: 30000 }).then(() => true, () => false);
  check(shown, 'evaluations: the finished evaluation is listed');
  if (shown) {
    const got = await page.$eval(sel, (b) => ({
      head: b.querySelector('.c-head').textContent,
      note: b.querySelector('.c-rows').textContent,
      logged: b.querySelector('.c-logged').textContent,
      rows: [...b.querySelectorAll('tbody tr')].map((tr) => ({
        name: tr.dataset.policy, cells: [...tr.querySelectorAll('.c-ips, .c-snips, .c-dr, .c-ess')]
          .map((c) => c.textContent) })),
      bars: b.querySelectorAll('.bar i').length }));
    const fmt = (e) => `${e.estimate.toFixed(3)} [${e.lo.toFixed(3)}, ${e.hi.toFixed(3)}]`;
    const res = evDone.result;
    const want = res.policies.map((p) => ({
      name: p.name, cells: [fmt(p.ips), fmt(p.snips), fmt(p.dr), p.ess.toFixed(1)] }));
    check(/ done /.test(got.head) && got.note.startsWith(res.rows + ' decisions replayed, ' + res.pending + ' '),
      `evaluations: "${got.head}" says done; "${got.note}" has ${res.rows} rows replayed, ${res.pending} pending`);
    check(got.logged === fmt(res.logged) && JSON.stringify(got.rows) === JSON.stringify(want),
      `evaluations: logged mean ${got.logged}, IPS, SNIPS, DR and ESS of both policies match the JSON ` + JSON.stringify(got.rows));
    check(got.bars === 6, `evaluations: an interval bar per estimate (${got.bars} of 6)`);
  }
  await page.screenshot({ path: path.join(ART, 'evaluations.png'), fullPage: true });
  check(errors.length === 0, 'evaluations: no console errors ' + JSON.stringify(errors));
  await ctxt.close();
}

// A wrong key, and no key: the login prompt and no data.
for (const [key, name] of [['wrong-key', 'wrong key'], [null, 'no key']]) {
  const { page, errors, ctxt } = await open(key, '#/');
  await page.waitForSelector('#login:not([hidden])', { timeout: 30000 });
  const st = await page.evaluate(() => ({
    rows: document.querySelectorAll('#agents tbody tr').length,
    charts: document.querySelectorAll('figure.chart').length,
    main: document.getElementById('main').hidden,
    text: document.body.innerText }));
  check(st.rows === 0 && st.charts === 0 && st.main && !/movies/.test(st.text),
    `${name}: login prompt, no agent rows, no charts, no agent names`);
  // The browser itself logs the refused fetch; nothing else may be logged.
  const other = errors.filter((e) => !/status of 401/.test(e));
  check(other.length === 0, `${name}: no console errors but the 401 ` + JSON.stringify(other));
  if (key) await page.screenshot({ path: path.join(ART, 'login.png'), fullPage: true });
  // Signing in with the right key shows the data.
  await page.fill('#login-key', KEY);
  await page.click('#login-form button');
  await page.waitForSelector('tr[data-agent="movies"]', { timeout: 30000 });
  check(true, `${name}: signing in with the right key shows the agents`);
  const url = page.url();
  check(!url.includes(KEY), `${name}: the key is not in the URL`);
  await ctxt.close();
}

await browser.close();
srv.kill('SIGTERM');
await new Promise((r) => srv.on('exit', r));
fs.rmSync(tmp, { recursive: true, force: true });
console.log(`screenshots in ${ART}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
