// The overview: mail over time (uPlot), the queue, TLS share, top
// destinations and bounce classes, inbound SPF/DKIM/DMARC pass rates.
// Live: /ui/api/live pushes the current minute's totals and the queue; the
// page adds what is new to the last bucket of the chart and to the figures,
// without a reload, and re-reads the whole overview now and then (and after
// a reconnect) so that nothing drifts.

import { api, h, heading, notice, pct, subscribeLive, table, time } from './lib.js';

/** @typedef {'received'|'delivered'|'deferred'|'bounced'} Kind */
/** @type {Kind[]} */
const KINDS = ['received', 'delivered', 'deferred', 'bounced'];
const LABEL = { received: 'Received', delivered: 'Delivered', deferred: 'Deferred', bounced: 'Bounced' };
const RANGES = /** @type {const} */ ([
  ['hour', 'Last hour', 60_000, 'per minute'],
  ['day', 'Last day', 3_600_000, 'per hour'],
  ['month', 'Last 30 days', 86_400_000, 'per day'],
]);
const QUEUE_STATES = /** @type {const} */ (['queued', 'active', 'deferred', 'held']);
/** The whole overview is read again this often while the page is open. */
const RESYNC_MS = 60_000;
/** After a minute turns, the wait before the overview is read again (events are written in batches). */
const SETTLE_MS = 3000;
const CHARTS = /** @type {const} */ ([
  ['flow', 'Mail flow', ['received', 'delivered']],
  ['problems', 'Deferrals and bounces', ['deferred', 'bounced']],
]);

/** Remembered while the dashboard is open. */
let range = /** @type {'hour'|'day'|'month'} */ ('hour');

/**
 * @typedef {{pass: number, total: number}} Rate
 * @typedef {{range: string, buckets: number[], series: Record<Kind, number[]>,
 *   queue: {total: number, queued: number, active: number, deferred: number, held: number},
 *   tls: {tls: number, total: number}, topDomains: {domain: string, count: number}[],
 *   topBounceClasses: {bounceClass: string, count: number}[],
 *   inbound: {spf: Rate, dkim: Rate, dmarc: Rate}}} Overview
 */

/** @param {import('./app.js').PageContext} ctx */
export async function overviewPage(ctx) {
  const { main } = ctx;
  const msg = notice();
  const liveState = h('span', { class: 'live', role: 'status' }, 'Connecting…');
  const rangeButtons = RANGES.map(([r, label]) =>
    h('button', { type: 'button', 'aria-pressed': String(r === range), dataset: { range: r }, onclick: () => setRange(r) }, label),
  );
  const figures = Object.fromEntries(KINDS.map((k) => [k, h('strong', { class: 'figure-value', dataset: { figure: k, value: '0' } }, '0')]));
  const queueFigures = Object.fromEntries(
    ['total', ...QUEUE_STATES].map((k) => [k, h('strong', { class: 'figure-value', dataset: { figure: `queue-${k}`, value: '0' } }, '0')]),
  );
  const per = h('span', null, '');
  const chartBoxes = CHARTS.map(([id, title, kinds]) => {
    const box = h('div', { class: 'chart', id: `chart-${id}`, role: 'img', 'aria-label': title });
    const data = h('details', { class: 'chart-data' }, h('summary', null, 'Show as a table'));
    return { id, title, kinds, box, data, figure: h('figure', { class: 'card chart-card' }, h('figcaption', null, h('h2', null, title)), box, data) };
  });
  const tlsBox = h('div', { class: 'card' });
  const inboundBox = h('div', { class: 'card' });
  const domainsBox = h('div', { class: 'card' });
  const bouncesBox = h('div', { class: 'card' });

  main.append(
    h('div', { class: 'page-head' }, heading('Overview'), liveState),
    h('div', { class: 'toolbar' }, h('div', { role: 'group', 'aria-label': 'Time range', class: 'segmented' }, rangeButtons), h('span', { class: 'muted' }, 'Charts ', per)),
    msg.el,
    h(
      'section',
      { class: 'figures', 'aria-label': 'Totals over the range' },
      KINDS.map((k) => h('div', { class: `figure figure-${k}` }, h('span', { class: 'figure-label' }, LABEL[k]), figures[k])),
    ),
    h(
      'section',
      { class: 'figures queue-figures', 'aria-label': 'Queue now' },
      h('div', { class: 'figure' }, h('span', { class: 'figure-label' }, h('a', { href: '#/queue' }, 'In the queue')), queueFigures.total),
      QUEUE_STATES.map((k) => h('div', { class: 'figure figure-small' }, h('span', { class: 'figure-label' }, k[0]?.toUpperCase() + k.slice(1)), queueFigures[k])),
    ),
    h('div', { class: 'charts' }, chartBoxes.map((c) => c.figure)),
    h('div', { class: 'grid2' }, tlsBox, inboundBox, domainsBox, bouncesBox),
  );

  /** @type {Overview | null} */
  let data = null;
  /** The current minute's totals as last seen, to turn the live totals into increments. */
  let base = { minute: 0, totals: zero() };
  /** @type {Map<string, any>} */
  const charts = new Map();
  let stopped = false;
  let loadSeq = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let settle;

  /** @param {'hour'|'day'|'month'} r */
  function setRange(r) {
    if (r === range) return;
    range = r;
    for (const b of rangeButtons) b.setAttribute('aria-pressed', String(b.dataset.range === r));
    void load();
  }

  async function load() {
    const seq = ++loadSeq;
    try {
      // The hour's last bucket is the current minute: what the live stream's totals continue from.
      const [ov, hour] = await Promise.all([api('GET', `/ui/api/overview?range=${range}`), range === 'hour' ? null : api('GET', '/ui/api/overview?range=hour')]);
      if (stopped || seq !== loadSeq) return;
      msg.clear();
      data = /** @type {Overview} */ (ov);
      const hr = /** @type {Overview} */ (hour ?? ov);
      const last = hr.buckets.length - 1;
      const totals = zero();
      for (const k of KINDS) totals[k] = hr.series[k][last] ?? 0;
      base = { minute: hr.buckets[last] ?? 0, totals };
      per.textContent = RANGES.find(([r]) => r === range)?.[3] ?? '';
      draw();
    } catch (e) {
      if (!stopped && seq === loadSeq) msg.error(e);
    }
  }

  function draw() {
    if (!data) return;
    const d = data;
    for (const k of KINDS) setFigure(figures[k], d.series[k].reduce((a, b) => a + b, 0));
    drawQueue(d.queue);
    for (const c of chartBoxes) drawChart(c, d);
    tlsBox.replaceChildren(
      h('h2', null, 'Outbound TLS'),
      rateRow('Delivered over TLS', d.tls.tls, d.tls.total, 'tls'),
      h('p', { class: 'muted' }, d.tls.total ? `${d.tls.tls} of ${d.tls.total} outbound deliveries (MX and smarthost)` : 'No outbound deliveries in this range.'),
    );
    inboundBox.replaceChildren(
      h('h2', null, 'Inbound authentication'),
      rateRow('SPF pass', d.inbound.spf.pass, d.inbound.spf.total, 'spf'),
      rateRow('DKIM pass', d.inbound.dkim.pass, d.inbound.dkim.total, 'dkim'),
      rateRow('DMARC pass', d.inbound.dmarc.pass, d.inbound.dmarc.total, 'dmarc'),
    );
    domainsBox.replaceChildren(h('h2', null, 'Top destination domains'), barList('Deliveries by recipient domain', d.topDomains.map((x) => [x.domain, x.count]), 'No outbound deliveries in this range.'));
    bouncesBox.replaceChildren(h('h2', null, 'Top bounce classes'), barList('Bounces by class', d.topBounceClasses.map((x) => [x.bounceClass, x.count]), 'No bounces in this range.'));
  }

  /** @param {Overview['queue']} q */
  function drawQueue(q) {
    setFigure(queueFigures.total, q.total);
    for (const k of QUEUE_STATES) setFigure(queueFigures[k], q[k]);
  }

  /**
   * @param {{id: string, title: string, kinds: readonly string[], box: HTMLElement, data: HTMLElement}} c
   * @param {Overview} d
   */
  function drawChart(c, d) {
    const kinds = /** @type {Kind[]} */ (c.kinds);
    const values = [d.buckets, ...kinds.map((k) => d.series[k])];
    const totals = kinds.map((k) => `${LABEL[k]} ${d.series[k].reduce((a, b) => a + b, 0)}`).join(', ');
    c.box.setAttribute('aria-label', `${c.title}, ${RANGES.find(([r]) => r === range)?.[1].toLowerCase()} ${per.textContent}: ${totals}`);
    const existing = charts.get(c.id);
    if (existing && existing.range === range) {
      existing.chart.setData(values);
    } else {
      existing?.chart.destroy();
      charts.set(c.id, { range, chart: makeChart(c.box, kinds, values) });
    }
    // The table behind the chart, built when someone opens it.
    const details = /** @type {HTMLDetailsElement} */ (c.data);
    const fill = () => {
      details.replaceChildren(
        h('summary', null, 'Show as a table'),
        table(
          `${c.title} as a table`,
          ['Time', ...kinds.map((k) => LABEL[k])],
          d.buckets.map((b, i) => h('tr', null, h('td', null, time(b)), kinds.map((k) => h('td', { class: 'num' }, d.series[k][i] ?? 0)))).reverse(),
        ),
      );
    };
    details.ontoggle = () => details.open && fill();
    if (details.open) fill();
  }

  /** @param {{at: number, minute: Record<Kind, number>, queue: Overview['queue']}} u */
  function onUpdate(u) {
    if (!data) return;
    drawQueue(u.queue);
    data.queue = u.queue;
    const minute = Math.floor(u.at / 60_000) * 60_000;
    if (minute < base.minute) return;
    const before = minute === base.minute ? base.totals : zero();
    // A new minute: events of the last one written after its last update are in no update (the
    // stream carries the current minute only). A fresh read, once they have landed, takes them in.
    if (minute > base.minute && base.minute > 0) {
      clearTimeout(settle);
      settle = setTimeout(() => void load(), SETTLE_MS);
    }
    base = { minute, totals: { ...zero(), ...u.minute } };
    // A range being switched to is not drawn yet: its read brings the figures.
    if (data.range !== range) return;
    const width = RANGES.find(([r]) => r === range)?.[2] ?? 60_000;
    const b = data.buckets;
    if (b.length === 0) return;
    // Asleep for longer than the whole range (a laptop lid): read it afresh rather than roll it.
    if (u.at >= /** @type {number} */ (b[b.length - 1]) + b.length * width) {
      void load();
      return;
    }
    // Time moved past the last bucket: new empty buckets at the end, the oldest leave.
    while (u.at >= /** @type {number} */ (b[b.length - 1]) + width) {
      b.push(/** @type {number} */ (b[b.length - 1]) + width);
      b.shift();
      for (const k of KINDS) {
        data.series[k].push(0);
        data.series[k].shift();
      }
    }
    for (const k of KINDS) {
      const add = Math.max(0, (u.minute[k] ?? 0) - (before[k] ?? 0));
      const s = data.series[k];
      s[s.length - 1] = (s[s.length - 1] ?? 0) + add;
    }
    for (const k of KINDS) setFigure(figures[k], data.series[k].reduce((a, b) => a + b, 0));
    for (const c of chartBoxes) drawChart(c, data);
  }

  const stopLive = subscribeLive({
    open(again) {
      liveState.textContent = 'Live';
      liveState.className = 'live on';
      // Back after a break: what happened meanwhile is only in the overview itself.
      if (again) void load();
    },
    update(u) {
      try {
        onUpdate(u);
      } catch (e) {
        msg.error(e);
      }
    },
    down(closed) {
      if (stopped) return;
      liveState.textContent = closed ? 'Not live' : 'Reconnecting…';
      liveState.className = 'live off';
    },
  });

  const timer = setInterval(() => void load(), RESYNC_MS);
  /** @type {ResizeObserver} */
  const resize = new ResizeObserver(() => {
    for (const c of chartBoxes) charts.get(c.id)?.chart.setSize(chartSize(c.box));
  });
  for (const c of chartBoxes) resize.observe(c.box);

  await load();

  return () => {
    stopped = true;
    stopLive();
    clearInterval(timer);
    clearTimeout(settle);
    resize.disconnect();
    for (const { chart } of charts.values()) chart.destroy();
  };
}

/** @returns {Record<Kind, number>} */
function zero() {
  return { received: 0, delivered: 0, deferred: 0, bounced: 0 };
}

/**
 * @param {HTMLElement} el
 * @param {number} n
 */
function setFigure(el, n) {
  if (el.dataset.value === String(n)) return;
  el.dataset.value = String(n);
  el.textContent = n.toLocaleString();
}

/**
 * A pass rate: the number, and a bar drawn from the same number.
 * @param {string} label
 * @param {number} part
 * @param {number} whole
 * @param {string} id
 */
function rateRow(label, part, whole, id) {
  const bar = h('span', { class: 'bar-fill' });
  bar.style.width = whole ? `${Math.round((1000 * part) / whole) / 10}%` : '0';
  return h(
    'div',
    { class: 'rate', dataset: { rate: id } },
    h('span', { class: 'rate-label' }, label),
    h('span', { class: 'bar', 'aria-hidden': 'true' }, bar),
    h('span', { class: 'rate-value' }, pct(part, whole), whole ? h('span', { class: 'muted' }, ` (${part}/${whole})`) : null),
  );
}

/**
 * A ranked list with bars, the counts written out.
 * @param {string} label
 * @param {[string, number][]} rows
 * @param {string} empty
 */
function barList(label, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'muted' }, empty);
  const max = Math.max(...rows.map(([, n]) => n), 1);
  return h(
    'ol',
    { class: 'bars', 'aria-label': label },
    rows.map(([name, n]) => {
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${Math.max(1, Math.round((100 * n) / max))}%`;
      return h('li', null, h('span', { class: 'bar-name' }, name), h('span', { class: 'bar', 'aria-hidden': 'true' }, fill), h('span', { class: 'bar-count' }, n.toLocaleString()));
    }),
  );
}

/** @param {HTMLElement} box */
function chartSize(box) {
  const width = Math.max(200, Math.floor(box.clientWidth));
  return { width, height: width < 500 ? 180 : 220 };
}

/**
 * A uPlot line chart; colours come from the style sheet (light and dark).
 * @param {HTMLElement} box
 * @param {Kind[]} kinds
 * @param {number[][]} values
 */
function makeChart(box, kinds, values) {
  const css = getComputedStyle(document.documentElement);
  const v = (/** @type {string} */ name) => css.getPropertyValue(name).trim();
  const axis = { stroke: v('--muted'), grid: { stroke: v('--grid'), width: 1 }, ticks: { stroke: v('--grid'), width: 1 } };
  // @ts-ignore -- uPlot is the global from uPlot.iife.min.js.
  const U = /** @type {any} */ (globalThis).uPlot;
  return new U(
    {
      ...chartSize(box),
      ms: 1,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (/** @type {any} */ _u, /** @type {number} */ _min, /** @type {number} */ max) => [0, max > 0 ? Math.ceil(max * 1.15) : 4] } },
      axes: [axis, { ...axis, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7], size: 48 }],
      series: [
        {},
        ...kinds.map((k) => ({
          label: LABEL[k],
          stroke: v(`--c-${k}`),
          fill: v(`--c-${k}-fill`),
          width: 2,
          points: { size: 5 },
        })),
      ],
    },
    values,
    box,
  );
}
