/*
 * app.js — the AgentDB dashboard: a hash-routed page over the JSON routes
 * of /v1/dashboard (docs/openapi.yaml), refreshed every few seconds.
 *
 * Charts: uPlot when the build bundled it (window.uPlot, loaded just
 * before this file in the same app.js), else a small canvas renderer of
 * our own (CanvasChart below) with the same interface; ?canvas forces the
 * latter. The API key, when the server asks for one (a 401), is entered
 * once in the login form, kept in sessionStorage and sent as
 * "Authorization: Bearer"; it never goes into a URL.
 */
(function () {
  'use strict';

  var params = new URLSearchParams(location.search);
  var REFRESH_MS = Math.max(500, +params.get('refresh') || 5000);
  var USE_UPLOT = !!window.uPlot && !params.has('canvas');
  var KEY_NAME = 'agentdb.key';
  var COLORS = ['#2e6fd8', '#e8833a', '#3aa76d', '#c2417a', '#7b5cd6',
                '#b8a200', '#3bb3c3', '#8a5a44'];
  document.documentElement.dataset.renderer = USE_UPLOT ? 'uplot' : 'canvas';

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fixed(v, d) { return v === null || v === undefined ? '–' : (+v).toFixed(d); }
  function int(v) { return v === null || v === undefined ? '–' : String(v); }
  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  function hhmm(t) { var d = new Date(t * 1000); return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()); }
  function dayhour(t) {
    var d = new Date(t * 1000);
    return pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' + pad(d.getUTCHours()) + 'h';
  }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  }

  /* ---------------------------------------------------------------- API */

  function AuthError() { this.message = 'unauthorized'; }

  function api(path) {
    var key = sessionStorage.getItem(KEY_NAME);
    var headers = key ? { Authorization: 'Bearer ' + key } : {};
    return fetch(path, { headers: headers, cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { showLogin(!!key); throw new AuthError(); }
      return r.json().then(function (j) {
        if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
        return j;
      });
    });
  }

  function showLogin(hadKey) {
    $('login').hidden = false;
    $('main').hidden = true;
    $('login-why').textContent = hadKey
      ? 'That API key was not accepted. Enter a valid key.'
      : 'This server requires an API key. It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer.';
    clearData();
    $('login-key').focus();
  }

  /* Removes every piece of data from the page (after a 401). */
  function clearData() {
    ['agents', 'recent', 'insp'].forEach(function (id) {
      $(id).querySelector('tbody').textContent = '';
    });
    ['overview-charts', 'agent-charts', 'agent-cards', 'evals'].forEach(function (id) { $(id).textContent = ''; });
    charts = {};
    ['stat-cache', 'stat-queue', 'stat-time'].forEach(function (id) { $(id).textContent = '–'; });
  }

  $('login-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY_NAME, $('login-key').value.trim());
    $('login-key').value = '';
    $('login').hidden = true;
    $('main').hidden = false;
    refresh();
  });
  $('signout').addEventListener('click', function () {
    sessionStorage.removeItem(KEY_NAME);
    clearData();
    showLogin(false);
  });

  /* ------------------------------------------------------------- charts */

  /* Nice round tick values covering [lo, hi]. */
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    var raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; })
      .filter(function (s) { return s >= raw; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  /* The fallback renderer: lines over a time axis, nulls are gaps. */
  function CanvasChart(host, spec) {
    this.spec = spec;
    this.canvas = el('canvas');
    host.appendChild(this.canvas);
    this.host = host;
  }
  CanvasChart.prototype.setData = function (xs, ys) {
    var c = this.canvas, spec = this.spec, dpr = window.devicePixelRatio || 1;
    var W = this.host.clientWidth || 560, H = 220;
    c.width = W * dpr; c.height = H * dpr; c.style.width = W + 'px'; c.style.height = H + 'px';
    var g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    var L = 58, R = 12, T = 10, B = 40, pw = W - L - R, ph = H - T - B;
    var ymin = Infinity, ymax = -Infinity;
    ys.forEach(function (s) { s.forEach(function (v) { if (v !== null) { ymin = Math.min(ymin, v); ymax = Math.max(ymax, v); } }); });
    if (ymin === Infinity) { ymin = 0; ymax = 1; }
    if (ymin > 0) ymin = 0;
    if (ymax === ymin) ymax = ymin + 1;
    var yt = ticks(ymin, ymax, 4), ystep = yt.length > 1 ? yt[1] - yt[0] : 1;
    while (yt[yt.length - 1] < ymax - ystep * 1e-9) yt.push(+(yt[yt.length - 1] + ystep).toPrecision(12));
    ymax = yt[yt.length - 1];
    var x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
    function px(x) { return L + (x - x0) / (x1 - x0) * pw; }
    function py(y) { return T + ph - (y - ymin) / (ymax - ymin) * ph; }
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#667085'; g.strokeStyle = '#e4e7ec'; g.lineWidth = 1;
    g.textAlign = 'right'; g.textBaseline = 'middle';
    yt.forEach(function (v) {
      g.beginPath(); g.moveTo(L, py(v)); g.lineTo(L + pw, py(v)); g.stroke();
      g.fillText(String(+v.toPrecision(6)), L - 6, py(v));
    });
    g.textAlign = 'center'; g.textBaseline = 'top';
    var fmt = spec.step >= 3600 ? dayhour : hhmm, nx = Math.max(2, Math.floor(pw / 90));
    for (var i = 0; i <= nx; i++) {
      var x = x0 + (x1 - x0) * i / nx;
      g.textAlign = i === 0 ? 'left' : i === nx ? 'right' : 'center';
      g.fillText(fmt(x), px(x), T + ph + 6);
    }
    g.textAlign = 'center';
    g.fillText(spec.xlabel, L + pw / 2, T + ph + 22);
    g.save(); g.translate(12, T + ph / 2); g.rotate(-Math.PI / 2);
    g.textBaseline = 'middle'; g.fillText(spec.ylabel, 0, 0); g.restore();
    ys.forEach(function (s, k) {
      g.strokeStyle = g.fillStyle = spec.series[k].color; g.lineWidth = 2;
      g.beginPath();
      var pen = false;
      s.forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        var X = px(xs[i]), Y = py(v);
        var alone = (i === 0 || s[i - 1] === null) && (i === s.length - 1 || s[i + 1] === null);
        if (alone) { g.fillRect(X - 2, Y - 2, 4, 4); }
        if (pen) g.lineTo(X, Y); else g.moveTo(X, Y);
        pen = true;
      });
      g.stroke();
    });
  };

  function UChart(host, spec) {
    var W = host.clientWidth || 560;
    var fmt = spec.step >= 3600 ? dayhour : hhmm;
    var opts = {
      width: W, height: 220, legend: { show: false },
      scales: { x: { time: false } },
      axes: [
        { label: spec.xlabel, values: function (u, vs) { return vs.map(fmt); },
          space: spec.step >= 3600 ? 90 : 60,
          incrs: [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800] },
        { label: spec.ylabel, size: 60 }
      ],
      series: [{}].concat(spec.series.map(function (s) {
        return { label: s.label, stroke: s.color, width: 2, points: { show: true, size: 4 } };
      }))
    };
    this.u = new window.uPlot(opts, [[], []].slice(0, 1).concat(spec.series.map(function () { return []; })), host);
  }
  UChart.prototype.setData = function (xs, ys) { this.u.setData([xs].concat(ys)); };

  var charts = {};

  /* Where a chart starts: the first bucket with data, but showing at
   * least minPts buckets (the older empty ones are left out). */
  function firstData(ys, minPts) {
    var n = ys.length ? ys[0].length : 0, first = n;
    ys.forEach(function (s) {
      for (var i = 0; i < s.length; i++) if (s[i] !== null && s[i] !== 0) { first = Math.min(first, i); break; }
    });
    return Math.max(0, Math.min(first, n - minPts));
  }

  /* A chart figure in container (made once, then updated). */
  function chart(container, id, spec, xs, ys) {
    var c = charts[id];
    if (!c || !document.body.contains(c.fig)) {
      var fig = el('figure', { class: 'chart', id: id });
      fig.appendChild(el('figcaption', {}, spec.title));
      var plot = el('div', { class: 'plot' });
      fig.appendChild(plot);
      var axes = el('div', { class: 'axes' });
      axes.appendChild(el('span', { class: 'ylabel' }, '↑ ' + spec.ylabel));
      axes.appendChild(el('span', { class: 'xlabel' }, spec.xlabel + ' →'));
      fig.appendChild(axes);
      var legend = el('div', { class: 'legend' });
      spec.series.forEach(function (s) {
        var span = el('span'), sw = el('i');
        sw.style.background = s.color;
        span.appendChild(sw);
        span.appendChild(document.createTextNode(s.label));
        legend.appendChild(span);
      });
      fig.appendChild(legend);
      container.appendChild(fig);
      c = charts[id] = { fig: fig, impl: USE_UPLOT ? new UChart(plot, spec) : new CanvasChart(plot, spec) };
    }
    var from = firstData(ys, spec.step >= 3600 ? 24 : 30);
    xs = xs.slice(from);
    ys = ys.map(function (s) { return s.slice(from); });
    var pts = 0;
    ys.forEach(function (s) { s.forEach(function (v) { if (v !== null && v !== 0) pts++; }); });
    c.fig.dataset.points = pts;
    c.impl.setData(xs, ys);
  }

  /* ----------------------------------------------------------- status */

  function status(ov) {
    $('stat-cache').textContent = ov.cache_hit_rate === null ? '–' : (100 * ov.cache_hit_rate).toFixed(1) + '%';
    $('stat-queue').textContent = ov.queue_depth + ' / ' + ov.queue_capacity;
    $('stat-time').textContent = clock(ov.now_ms);
    $('signout').hidden = !sessionStorage.getItem(KEY_NAME);
  }

  /* ---------------------------------------------------------- overview */

  function agentRow(a) {
    var tr = el('tr', { 'data-agent': a.agent });
    var td = el('td'), link = el('a', { href: '#/agent/' + encodeURIComponent(a.agent) }, a.agent);
    td.appendChild(link);
    tr.appendChild(td);
    [['c-dps', fixed(a.decisions_per_s, 1)], ['c-rps', fixed(a.rewards_per_s, 1)],
     ['c-mean-hour', fixed(a.mean_reward_hour, 3)], ['c-mean', fixed(a.mean_reward, 3)],
     ['c-dec', int(a.decisions)], ['c-rew', int(a.rewards)],
     ['c-p50', fixed(a.p50_ms, 3)], ['c-p99', fixed(a.p99_ms, 3)]].forEach(function (c) {
      tr.appendChild(el('td', { class: c[0] }, c[1]));
    });
    return tr;
  }

  function overview() {
    return api('/v1/dashboard/overview').then(function (ov) {
      status(ov);
      var body = $('agents').querySelector('tbody');
      body.textContent = '';
      ov.agents.forEach(function (a) { body.appendChild(agentRow(a)); });
      $('agents-note').textContent = ov.agents.length
        ? 'Agents seen since the server started (at most ' + ov.max_agents + ' by name; more count as _other). Rates over the last 10 s; latency over the last hour.'
        : 'No decisions or rewards since the server started.';
      var top = ov.agents.slice().sort(function (a, b) { return b.decisions_hour - a.decisions_hour; }).slice(0, 6);
      if (!top.length) return;
      return Promise.all(top.map(function (a) {
        return api('/v1/dashboard/agents/' + encodeURIComponent(a.agent) + '/series?minutes=60&hours=1');
      })).then(function (all) {
        var xs = all[0].series.minute.t;
        var spec = { title: 'Decisions per minute, last hour', ylabel: 'decisions / min', xlabel: 'time (UTC)', step: 60,
                     series: top.map(function (a, i) { return { label: a.agent, color: COLORS[i % COLORS.length] }; }) };
        chart($('overview-charts'), 'chart-overview-decisions', spec, xs,
              all.map(function (s) { return s.series.minute.decisions; }));
        var spec2 = { title: 'Mean reward per minute, last hour', ylabel: 'mean reward', xlabel: 'time (UTC)', step: 60,
                      series: spec.series };
        chart($('overview-charts'), 'chart-overview-reward', spec2, xs,
              all.map(function (s) { return s.series.minute.mean_reward; }));
      });
    });
  }

  /* ------------------------------------------------------------- agent */

  var currentAgent = null;

  function card(label, value, id) {
    var c = el('div', { class: 'card', id: id });
    c.appendChild(el('b', {}, value));
    c.appendChild(el('span', {}, label));
    return c;
  }

  function agentPage(name) {
    if (currentAgent !== name) {
      currentAgent = name;
      $('agent-charts').textContent = '';
      $('insp').querySelector('tbody').textContent = '';
    }
    $('agent-name').textContent = name;
    var path = '/v1/dashboard/agents/' + encodeURIComponent(name) + '/series';
    return Promise.all([api(path), api('/v1/dashboard/overview')]).then(function (r) {
      var d = r[0], s = d.summary;
      status(r[1]);
      var cards = $('agent-cards');
      cards.textContent = '';
      cards.appendChild(card('decisions', int(s.decisions), 'card-decisions'));
      cards.appendChild(card('rewards', int(s.rewards), 'card-rewards'));
      cards.appendChild(card('mean reward (all)', fixed(s.mean_reward, 3), 'card-mean'));
      cards.appendChild(card('mean reward (1 h)', fixed(s.mean_reward_hour, 3), 'card-mean-hour'));
      cards.appendChild(card('decisions/s', fixed(s.decisions_per_s, 1), 'card-dps'));
      cards.appendChild(card('p50 / p99 ms', fixed(s.p50_ms, 3) + ' / ' + fixed(s.p99_ms, 3), 'card-latency'));
      if (!d.series) return;
      var m = d.series.minute, h = d.series.hour, host = $('agent-charts');
      var X = 'time (UTC)';
      chart(host, 'chart-reward', { title: 'Mean reward per minute (learning curve)', ylabel: 'mean reward', xlabel: X, step: 60,
        series: [{ label: 'mean reward', color: COLORS[0] }] }, m.t, [m.mean_reward]);
      chart(host, 'chart-counts', { title: 'Decisions and rewards per minute', ylabel: 'per minute', xlabel: X, step: 60,
        series: [{ label: 'decisions', color: COLORS[0] }, { label: 'rewards', color: COLORS[1] }] }, m.t, [m.decisions, m.rewards]);
      chart(host, 'chart-latency', { title: 'Decide latency per minute', ylabel: 'ms', xlabel: X, step: 60,
        series: [{ label: 'p50', color: COLORS[2] }, { label: 'p99', color: COLORS[3] }] }, m.t, [m.p50_ms, m.p99_ms]);
      chart(host, 'chart-hourly', { title: 'Hourly rollup: mean reward, last 7 days', ylabel: 'mean reward', xlabel: X, step: 3600,
        series: [{ label: 'mean reward', color: COLORS[4] }] }, h.t, [h.mean_reward]);
      if (d.baseline === null) $('baseline-note').hidden = false;
    });
  }

  function ciBar(lo, hi, mean, scaleLo, scaleHi) {
    var bar = el('div', { class: 'bar' }), span = scaleHi - scaleLo || 1;
    if (lo !== null && hi !== null) {
      var i = el('i');
      i.style.left = (100 * (lo - scaleLo) / span) + '%';
      i.style.width = Math.max(1, 100 * (hi - lo) / span) + '%';
      bar.appendChild(i);
    }
    var b = el('b');
    b.style.left = (100 * (mean - scaleLo) / span) + '%';
    bar.appendChild(b);
    return bar;
  }

  function inspect() {
    var user = $('insp-user').value.trim() || '*', ctx = $('insp-context').value.trim();
    var q = ctx ? '?context=' + encodeURIComponent(ctx) : '';
    var path = '/v1/dashboard/agents/' + encodeURIComponent(currentAgent) + '/inspect/' + encodeURIComponent(user) + q;
    var body = $('insp').querySelector('tbody');
    return api(path).then(function (r) {
      body.textContent = '';
      var lo = Math.min.apply(null, r.arms.map(function (a) { return a.ci_low === null ? a.mean : a.ci_low; }).concat([0]));
      var hi = Math.max.apply(null, r.arms.map(function (a) { return a.ci_high === null ? a.mean : a.ci_high; }).concat([1]));
      r.arms.forEach(function (a) {
        var tr = el('tr', { 'data-action': a.action });
        tr.appendChild(el('td', { class: 'c-action' }, a.action));
        tr.appendChild(el('td', { class: 'c-n' }, int(a.n)));
        tr.appendChild(el('td', { class: 'c-mean' }, fixed(a.mean, 3)));
        tr.appendChild(el('td', { class: 'c-ci' }, fixed(a.ci_low, 3) + ' – ' + fixed(a.ci_high, 3)));
        var td = el('td');
        td.appendChild(ciBar(a.ci_low, a.ci_high, a.mean, lo, hi));
        tr.appendChild(td);
        tr.appendChild(el('td', { class: 'c-prob' }, fixed(a.choice_probability, 3)));
        body.appendChild(tr);
      });
      $('insp-note').textContent = r.arms.length
        ? 'State ' + r.state_key.slice(0, 12) + '…, algorithm ' + r.algorithm + ', ' + r.arms.length + ' actions.'
        : 'No posterior stored for this user and state yet.';
    }).catch(function (e) {
      if (e instanceof AuthError) return;
      body.textContent = '';
      $('insp-note').textContent = 'Error: ' + e.message;
      $('insp-note').className = 'note error';
    });
  }

  $('insp-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    $('insp-note').className = 'note';
    inspect();
  });

  /* ------------------------------------------------------------ recent */

  function recent() {
    return Promise.all([api('/v1/dashboard/recent?limit=50'), api('/v1/dashboard/overview')]).then(function (r) {
      status(r[1]);
      var body = $('recent').querySelector('tbody');
      body.textContent = '';
      r[0].events.forEach(function (e) {
        var tr = el('tr', { 'data-event': e.event_id || '' });
        tr.appendChild(el('td', {}, clock(e.ts_ms)));
        tr.appendChild(el('td', { class: 'c-agent' }, e.agent));
        tr.appendChild(el('td', { class: 'c-user' }, e.user_id));
        tr.appendChild(el('td', { class: 'c-action' }, e.action));
        tr.appendChild(el('td', { class: 'c-prop' }, fixed(e.propensity, 3)));
        tr.appendChild(el('td', { class: 'c-reward' }, fixed(e.reward, 3)));
        tr.appendChild(el('td', {}, e.reward_ts_ms === null ? '–' : ((e.reward_ts_ms - e.ts_ms) / 1000).toFixed(1) + ' s'));
        tr.appendChild(el('td', { class: 'c-event' }, e.event_id || '–'));
        body.appendChild(tr);
      });
    });
  }

  /* ------------------------------------------------------- evaluations */

  function interval(e) { return fixed(e.estimate, 3) + ' [' + fixed(e.lo, 3) + ', ' + fixed(e.hi, 3) + ']'; }

  /* "0.512 [0.470, 0.555]" and its bar, for an {estimate, lo, hi}. */
  function estimateCells(tr, cls, e, lo, hi) {
    tr.appendChild(el('td', { class: cls }, e ? interval(e) : '–'));
    var td = el('td');
    if (e) td.appendChild(ciBar(e.lo, e.hi, e.estimate, lo, hi));
    tr.appendChild(td);
  }

  function evalBlock(ev) {
    var box = el('div', { class: 'eval', 'data-eval': ev.id });
    var head = ev.agent + ' · ' + ev.id.slice(0, 8) + ' · ' + ev.status +
      ' · started ' + clock(ev.created_at_ms) +
      (ev.finished_at_ms ? ', finished ' + clock(ev.finished_at_ms) : '') +
      ' · ' + ev.progress.rows + ' rows read (' + Math.round(100 * ev.progress.fraction) + '% of the window)';
    box.appendChild(el('h3', { class: 'c-head' }, head));
    if (ev.error) box.appendChild(el('p', { class: 'note error' }, ev.error));
    var res = ev.result;
    if (!res) return box;
    box.appendChild(el('p', { class: 'note c-rows' }, res.rows + ' decisions replayed, ' + res.pending +
      ' still waiting for a reward, ' + res.bad + ' unreadable. Estimates of the mean reward with 95% intervals.'));
    var lg = el('p', { class: 'note' }, 'The logged policy\'s actual mean reward: ');
    lg.appendChild(el('b', { class: 'c-logged' }, interval(res.logged)));
    box.appendChild(lg);
    var all = [res.logged];
    res.policies.forEach(function (p) { all.push(p.ips, p.snips, p.dr); });
    var lo = Math.min.apply(null, all.map(function (e) { return e.lo; }));
    var hi = Math.max.apply(null, all.map(function (e) { return e.hi; }));
    var t = el('table', { class: 'evaltab' }), head2 = el('tr');
    ['policy', 'IPS', '', 'SNIPS', '', 'doubly robust', '', 'ESS'].forEach(function (h) { head2.appendChild(el('th', {}, h)); });
    t.appendChild(el('thead')).appendChild(head2);
    var body = t.appendChild(el('tbody'));
    res.policies.forEach(function (p) {
      var r = el('tr', { 'data-policy': p.name });
      r.appendChild(el('td', { class: 'c-name' }, p.name));
      estimateCells(r, 'c-ips', p.ips, lo, hi);
      estimateCells(r, 'c-snips', p.snips, lo, hi);
      estimateCells(r, 'c-dr', p.dr, lo, hi);
      r.appendChild(el('td', { class: 'c-ess' }, fixed(p.ess, 1)));
      body.appendChild(r);
    });
    box.appendChild(t);
    return box;
  }

  function evaluations() {
    return api('/v1/dashboard/overview').then(function (ov) {
      status(ov);
      return Promise.all(ov.agents.map(function (a) {
        return api('/v1/agents/' + encodeURIComponent(a.agent) + '/evaluations')
          .then(function (r) { return r.evaluations; }, function (e) {
            if (e instanceof AuthError) throw e;
            return []; /* an agent deleted since the overview */
          });
      }));
    }).then(function (lists) {
      var host = $('evals'), n = 0;
      host.textContent = '';
      lists.forEach(function (l) { l.forEach(function (ev) { host.appendChild(evalBlock(ev)); n++; }); });
      $('eval-note').textContent = (n ? n + ' offline evaluation' + (n > 1 ? 's' : '') + ', newest first per agent. '
        : 'No offline evaluation on this server yet. ') +
        'Start one with POST /v1/agents/{agent}/evaluations (docs/evaluation.md); ' +
        'agentdb evaluate runs one from the command line instead, not listed here.';
    });
  }

  /* ------------------------------------------------------------ router */

  function route() {
    var h = location.hash.replace(/^#/, '') || '/';
    var m = h.match(/^\/agent\/(.+)$/);
    if (m) return { page: 'agent', agent: decodeURIComponent(m[1]) };
    if (h === '/recent') return { page: 'recent' };
    if (h === '/evaluations') return { page: 'evaluations' };
    return { page: 'overview' };
  }

  var busy = false;
  function refresh() {
    if (busy || !$('login').hidden) return;
    var r = route();
    document.querySelectorAll('.page').forEach(function (p) { p.hidden = p.id !== 'page-' + r.page; });
    document.querySelectorAll('nav a').forEach(function (a) {
      a.classList.toggle('active', a.dataset.nav === r.page);
    });
    var job = r.page === 'agent' ? agentPage(r.agent)
      : r.page === 'recent' ? recent()
      : r.page === 'evaluations' ? evaluations()
      : overview();
    busy = true;
    job.catch(function (e) {
      if (!(e instanceof AuthError) && window.console) console.warn('agentdb dashboard:', e.message);
    }).then(function () {
      busy = false;
      document.documentElement.dataset.loaded = r.page;
    });
  }

  window.addEventListener('hashchange', function () { currentAgent = null; refresh(); });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
