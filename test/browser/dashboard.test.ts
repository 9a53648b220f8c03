// The dashboard in a real browser (issue 14): Debian's Chromium driven by
// puppeteer-core against a real Tern in this process (smtp + http
// listeners on port 0), a loopback DNS server and a scripted peer MTA with
// TLS on 127.0.0.2 as the outside world. The admin is made by the real
// `tern user add --admin` code.
//
// Steps, in order, on one page: log in (a wrong password first); the
// charts are drawn; a figure moves live after an SMTP send, without a
// reload (hour and day ranges); a deferred message is retried from the
// queue page (Escape cancels the confirmation first), another is held,
// the filters work; a message's timeline shows each attempt's relay, TLS
// and reply, and a held message's page its headers; a suppression is added
// and removed; an API key is made (shown once) and revoked; a user is added
// and deleted; a webhook (made through /v1/ by the real `tern apikey` key)
// shows its deliveries and is deleted; the phone layout; logout.
//
// Any page error, console error, failed request or HTTP answer >= 400 that
// the step did not announce fails the test. Screenshots of each step go to
// test/browser/screenshots/ (git-ignored); with UPDATE_DOCS_SCREENSHOT=1
// the overview is also written to docs/dashboard.png, the README's picture
// (not on every run: it would change a tracked file each time).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { generate } from 'selfsigned';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { runUser } from '../../src/cli/user.ts';
import { runApiKey } from '../../src/cli/apikey.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer, type PeerCommand } from '../helpers/scripted-peer.ts';
import { ROOT, waitFor, writeConfig } from '../helpers/server.ts';
import { CHROMIUM, requireChromium } from '../helpers/tools.ts';
import { open, sendMail } from '../e2e/smtp-kit.ts';

// The callbacks given to page.evaluate and friends run in the page. The
// project's lib has no DOM (and taking it in would retype Node's timers),
// so the page's names are declared here, for this file only, loosely.
declare const document: any;
declare const window: any;
declare const getComputedStyle: any;
declare const location: any;
type HTMLElement = any;
type HTMLCanvasElement = any;
type HTMLInputElement = any;
type HTMLButtonElement = any;

const SKIP = requireChromium();
const ADMIN = { address: 'admin@tern.test', password: 'dashboard-admin-pw' };
/** Relays through Tern from here (a trusted network); mail from 127.0.0.1 is mail from outside. */
const TRUSTED_IP = '127.0.0.9';
const PEER_IP = '127.0.0.2';
const SHOTS = path.join(import.meta.dirname, 'screenshots');
const DOCS_SHOT = path.join(ROOT, 'docs', 'dashboard.png');
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const STEP_MS = 15_000;

describe('the dashboard in Chromium', { skip: SKIP, timeout: 120_000 }, () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let base: string;
  let smtp: number;
  let browser: Browser;
  let page: Page;
  /** later@remote.test: 451 on the first attempt, accepted after. */
  let laterTries = 0;
  /** The message the queue step retried, whose timeline the next step opens. */
  let retried = '';
  /** The message the queue step held: still in the spool, so its page shows its headers. */
  let heldId = '';
  /** A webhook receiver (answers 200), and the webhook an API key registered with it. */
  let receiver: http.Server;
  const hooked: string[] = [];
  let webhookId = '';

  /** What went wrong in the browser, unannounced. */
  const problems: string[] = [];
  /** Answers >= 400 that the current step causes on purpose. */
  let allowed: { status: number; url: RegExp }[] = [];
  const isAllowed = (status: number, url: string) => allowed.some((a) => a.status === status && a.url.test(url));

  /** Fails the step on anything the browser reported, then forgets what the step announced. */
  function clean(): void {
    const seen = problems.splice(0);
    allowed = [];
    assert.deepEqual(seen, [], 'page errors, console errors, failed requests or unexpected HTTP errors');
  }

  function watch(p: Page): void {
    p.on('pageerror', (e) => problems.push(`pageerror: ${(e as Error).message ?? e}`));
    p.on('console', (m) => {
      if (m.type() !== 'error') return;
      // Chromium reports every answer >= 400 to fetch() on the console as well: those announced are fine.
      const status = /status of (\d{3})/.exec(m.text())?.[1];
      if (status && isAllowed(Number(status), m.location()?.url ?? '')) return;
      problems.push(`console error: ${m.text()} (${m.location()?.url ?? ''})`);
    });
    p.on('requestfailed', (r) => {
      // Leaving a page closes its live stream on purpose (EventSource.close): Chromium calls that "aborted".
      if (r.failure()?.errorText === 'net::ERR_ABORTED' && new URL(r.url()).pathname === '/ui/api/live') return;
      problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
    });
    p.on('response', (r) => {
      if (r.status() >= 400 && !isAllowed(r.status(), r.url())) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
    });
  }

  const shot = (p: Page, name: string) => p.screenshot({ path: path.join(SHOTS, `${name}.png`) as `${string}.png` });

  /** Follows a nav link (a real click) and waits for the page to be drawn. */
  async function go(p: Page, name: string): Promise<void> {
    await p.click(`nav a[href="#/${name}"]`);
    await settled(p, name);
  }

  async function settled(p: Page, name: string): Promise<void> {
    await p.waitForFunction((n) => {
      const main = document.querySelector('#main') as HTMLElement;
      return main.dataset.page === n && !main.hasAttribute('aria-busy');
    }, { timeout: STEP_MS }, name);
  }

  /** Opens the confirmation from `button` and answers it. */
  async function confirm(p: Page, button: string, answer: 'ok' | 'cancel'): Promise<string> {
    await p.click(button);
    await p.waitForSelector('#confirm[open]', { timeout: STEP_MS });
    const text = await p.$eval('#confirm-text', (e) => e.textContent ?? '');
    await p.click(`#confirm button[value="${answer}"]`);
    await p.waitForSelector('#confirm:not([open])', { timeout: STEP_MS });
    return text;
  }

  const rowSelector = (attr: string, value: string) => `tr[data-${attr}="${value}"]`;

  async function send(from: string, to: string[], subject: string, opts: { trusted?: boolean } = {}): Promise<string> {
    const c = await open(smtp, opts.trusted ? { localAddress: TRUSTED_IP } : {});
    try {
      return await sendMail(c, from, to, `From: <${from}>\r\nTo: <${to[0]}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@shop.test>\r\n\r\nHello from the browser test.\r\n`);
    } finally {
      c.close();
    }
  }

  /** The queue as the server sees it, through the same dashboard API the page uses (with the page's cookie). */
  async function queueState(id: string): Promise<string | null> {
    return page.evaluate(async (qid) => {
      const r = await fetch('/ui/api/queue?limit=1000');
      const j = (await r.json()) as { messages: { id: string; state: string }[] };
      return j.messages.find((m) => m.id === qid)?.state ?? null;
    }, id);
  }

  before(async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const pems = await generate([{ name: 'commonName', value: 'mx.remote.test' }], { keySize: 2048, algorithm: 'sha256' });
    peer = await ScriptedPeer.start({
      host: PEER_IP,
      tls: { cert: pems.cert, key: pems.private },
      on: (c: PeerCommand) => {
        if (c.verb !== 'RCPT') return undefined;
        const to = /<([^>]*)>/.exec(c.arg)?.[1] ?? '';
        if (to === 'later@remote.test' && ++laterTries === 1) return '451 4.3.2 Mailbox busy, try again later';
        if (to === 'wait@remote.test') return '451 4.7.1 Greylisted, come back later';
        if (to === 'gone@remote.test') return '550 5.1.1 <gone@remote.test>: Recipient address rejected: User unknown';
        return undefined;
      },
    });
    dns = await startDnsServer({
      'remote.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
      'partner.test': { MX: [{ preference: 10, exchange: 'mx.remote.test' }] },
      'mx.remote.test': { A: [PEER_IP] },
      'shop.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      '_dmarc.shop.test': { TXT: ['v=DMARC1; p=none'] },
      'elsewhere.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    });
    cfg = writeConfig({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0 },
      ],
      trustedNetworks: [`${TRUSTED_IP}/32`],
      dns: { servers: [dns.address], timeout: '1s' },
      inbound: { enabled: true },
      outbound: { port: peer.port, timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      // No retry on its own during the test: the queue page's button does it.
      queue: { retrySchedule: ['1h'] },
    });
    const out: string[] = [];
    const code = await runUser(loadConfig(cfg.file), ['add', ADMIN.address, '--admin'], {
      stdin: Readable.from([`${ADMIN.password}\n`]),
      isTTY: false,
      stdout: { write: (s: string) => out.push(s) },
      stderr: { write: (s: string) => out.push(s) },
    });
    assert.equal(code, 0, out.join(''));
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
    smtp = tern.ports.find((p) => p.role === 'smtp')!.port;
    // An API key (made by the real `tern apikey` code) with a webhook: the webhooks page lists it with its deliveries.
    receiver = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        hooked.push(String(req.headers['webhook-id']));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    let key = '';
    assert.equal(runApiKey(loadConfig(cfg.file), ['create', 'hooks-app', '--send-as', '@tern.test'], { write: (s: string) => (key += s) }, { write: () => true }), 0);
    const made = await fetch(`${base}/v1/webhooks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.trim()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ url: `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook` }),
    });
    assert.equal(made.status, 201);
    webhookId = ((await made.json()) as { id: string }).id;
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Root in a container: no user namespaces for Chromium's sandbox; /dev/shm is small there.
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--lang=en-US'],
      env: { ...process.env, TZ: 'UTC' },
    });
    page = await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    await page.setViewport(DESKTOP);
    watch(page);
  });

  after(async () => {
    await browser?.close();
    await tern?.stop(500);
    receiver?.closeAllConnections();
    await new Promise((resolve) => (receiver ? receiver.close(resolve) : resolve(undefined)));
    await peer?.close();
    await dns?.close();
    if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  it('refuses a wrong password with the server\'s message, then logs in', async () => {
    // Some traffic first, so that the charts have something to draw.
    await send('ann@shop.test', ['bob@tern.test'], 'inbound one');
    await send('ann@elsewhere.test', ['alice@tern.test'], 'inbound two');
    await send('alice@tern.test', ['ok@remote.test', 'team@partner.test'], 'outbound one', { trusted: true });
    await send('alice@tern.test', ['gone@remote.test'], 'outbound bounce', { trusted: true });

    // Before logging in the session probe answers 401: that one is expected.
    allowed = [{ status: 401, url: /\/ui\/api\/session$/ }, { status: 401, url: /\/ui\/login$/ }];
    await page.goto(`${base}/`, { waitUntil: 'load' });
    await page.waitForSelector('#login-form', { visible: true });
    await page.type('#login-address', ADMIN.address);
    await page.type('#login-password', 'not-the-password');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => (document.querySelector('#login-error')?.textContent ?? '') !== '');
    const error = await page.$eval('#login-error', (e) => e.textContent);
    assert.match(error ?? '', /wrong password/i);
    assert.equal(await page.$eval('#login-error', (e) => e.getAttribute('role')), 'alert');
    await shot(page, '01-login-refused');

    // The password field is selected after a refusal: typing replaces it.
    await page.type('#login-password', ADMIN.password);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#shell', { visible: true });
    await settled(page, 'overview');
    assert.equal(await page.$eval('#who', (e) => e.textContent), ADMIN.address);
    // The session is an HttpOnly cookie: script cannot read it.
    assert.equal(await page.evaluate(() => document.cookie), '');
    const cookies = await browser.cookies();
    const session = cookies.find((c) => c.name === 'tern_session');
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));
    clean();
  });

  it('draws the charts and the figures of the overview', async () => {
    await page.waitForSelector('#chart-flow canvas');
    await page.waitForSelector('#chart-problems canvas');
    // The traffic above is in the figures (the events are written in batches: wait for them).
    await page.waitForFunction(() => Number((document.querySelector('[data-figure="received"]') as HTMLElement).dataset.value) >= 4, { timeout: STEP_MS }).catch(async () => {
      // The overview may have been read before the last events were stored; the live stream or a range switch brings them.
      await page.click('[data-range="day"]');
      await page.click('[data-range="hour"]');
      await page.waitForFunction(() => Number((document.querySelector('[data-figure="received"]') as HTMLElement).dataset.value) >= 4);
    });
    const canvases = await page.$$eval('.chart canvas', (list) =>
      list.map((c) => {
        const canvas = c as HTMLCanvasElement;
        const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i]! > 0) painted++;
        return { width: canvas.width, height: canvas.height, painted };
      }),
    );
    assert.equal(canvases.length, 2, JSON.stringify(canvases));
    for (const c of canvases) {
      assert.ok(c.width > 100 && c.height > 100, JSON.stringify(c));
      assert.ok(c.painted > 1000, `a drawn chart: ${JSON.stringify(c)}`);
    }
    // The range buttons are real toggle buttons.
    assert.equal(await page.$eval('[data-range="hour"]', (b) => b.getAttribute('aria-pressed')), 'true');
    await page.waitForFunction(() => document.querySelector('.live')?.textContent === 'Live');
    // TLS share, top domains and bounce classes, inbound pass rates: once the outbound mail is done, drawn from the server's figures.
    type Overview = { tls: { tls: number; total: number }; topDomains: { domain: string; count: number }[]; topBounceClasses: { bounceClass: string }[] };
    const overview = (await waitFor(async () => {
      const o = (await page.evaluate(async () => (await fetch('/ui/api/overview?range=hour')).json())) as Overview;
      return o.tls.total >= 2 && o.topBounceClasses.length > 0 ? o : null;
    }, STEP_MS, 'the outbound deliveries and the bounce in the overview'))!;
    await page.click('[data-range="day"]');
    await page.click('[data-range="hour"]');
    await page.waitForFunction(() => /remote\.test/.test(document.querySelector('#main')?.textContent ?? ''));
    assert.match(await page.$eval('[data-rate="tls"] .rate-value', (e) => e.textContent ?? ''), new RegExp(`\\(${overview.tls.tls}/${overview.tls.total}\\)`));
    const text = await page.$eval('#main', (e) => e.textContent ?? '');
    for (const d of overview.topDomains) assert.ok(text.includes(d.domain), d.domain);
    for (const b of overview.topBounceClasses) assert.ok(text.includes(b.bounceClass), b.bounceClass);
    assert.deepEqual(overview.topDomains.map((d) => d.domain).sort(), ['partner.test', 'remote.test']);
    await shot(page, '02-overview');
    clean();
  });

  it('moves a figure live after an SMTP send, without a reload', async () => {
    const marker = await page.evaluate(() => {
      (window as unknown as { __ternMarker: number }).__ternMarker = Math.random();
      return (window as unknown as { __ternMarker: number }).__ternMarker;
    });
    const navigations = await page.evaluate(() => (performance as any).getEntriesByType('navigation').length);
    let reloaded = false;
    const onNav = (f: { url: () => string }) => {
      if (f === page.mainFrame() && !f.url().includes('#')) reloaded = true;
    };
    page.on('framenavigated', onNav);
    const shown = async () => Number(await page.$eval('[data-figure="received"]', (e) => (e as HTMLElement).dataset.value));
    /** The server's count for the range, as the overview would read it now. */
    const server = async (range: string) =>
      page.evaluate(async (r) => ((await (await fetch(`/ui/api/overview?range=${r}`)).json()) as { series: { received: number[] } }).series.received.reduce((a, b) => a + b, 0), range);
    /**
     * The page shows what the server counts, and at least `min`. Other mail may still be moving
     * (the DSN of the bounce above), so the test compares with the server rather than adding one.
     */
    const caughtUp = (range: string, min: number) =>
      waitFor(async () => {
        const [s, p] = [await server(range), await shown()];
        return s >= min && p === s;
      }, STEP_MS, `the ${range}'s received figure at the server's count (at least ${min})`);

    for (const [range, per] of [['hour', 'per minute'], ['day', 'per hour']] as const) {
      // The day (by hour): the live totals of the minute go into the current hour's bucket.
      if (range === 'day') {
        await page.click('[data-range="day"]');
        await page.waitForFunction((p) => document.querySelector('.toolbar')?.textContent?.includes(p), {}, per);
      }
      await caughtUp(range, 0);
      const before = await shown();
      await send('ann@shop.test', ['bob@tern.test'], `live ${range}`);
      await caughtUp(range, before + 1);
      assert.equal(await page.evaluate(() => (window as unknown as { __ternMarker: number }).__ternMarker), marker, 'the same document: no reload');
      assert.equal(await page.$eval('[data-figure="received"]', (e) => e.textContent), String(await shown()));
    }
    page.off('framenavigated', onNav);
    assert.equal(await page.evaluate(() => (performance as any).getEntriesByType('navigation').length), navigations);
    assert.equal(reloaded, false);
    await page.click('[data-range="hour"]');
    await page.waitForFunction(() => document.querySelector('.toolbar')?.textContent?.includes('per minute'));
    clean();
  });

  it('retries a deferred message from the queue page, after a confirmation (Escape cancels it)', async () => {
    const later = await send('alice@tern.test', ['later@remote.test'], 'retry me', { trusted: true });
    const wait = await send('alice@tern.test', ['wait@remote.test'], 'hold me', { trusted: true });
    await waitFor(async () => (await queueState(later)) === 'deferred' && (await queueState(wait)) === 'deferred', STEP_MS, 'two deferred messages');

    await go(page, 'queue');
    await page.select('#queue-state', 'deferred');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector(rowSelector('id', later));
    await page.waitForSelector(rowSelector('id', wait));
    const row = await page.$eval(rowSelector('id', later), (e) => e.textContent ?? '');
    assert.match(row, /later@remote\.test/);
    assert.match(row, /451 4\.3\.2 Mailbox busy/);
    await shot(page, '03-queue');

    // Keyboard: the dialog takes focus (on Cancel), Escape closes it, focus comes back, nothing happened.
    const retry = `${rowSelector('id', later)} button[data-action="retry"]`;
    await page.focus(retry);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#confirm[open]');
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLButtonElement | null)?.value), 'cancel');
    assert.match(await page.$eval('#confirm-text', (e) => e.textContent ?? ''), new RegExp(`Try to deliver ${later} now`));
    await shot(page, '04-queue-confirm');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#confirm:not([open])');
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.action), 'retry');
    assert.equal(laterTries, 1);
    assert.equal(await queueState(later), 'deferred');

    // Confirmed: the peer takes it this time, and the list (following the live stream) drops it.
    await confirm(page, retry, 'ok');
    await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: STEP_MS }, rowSelector('id', later));
    assert.equal(laterTries, 2);
    assert.equal(await queueState(later), null);
    assert.match(await page.$eval('#main .notice', (e) => e.textContent ?? ''), new RegExp(`${later} will be tried now`));

    // Hold the other one: it leaves the "deferred" filter and shows under "held", with Release.
    await confirm(page, `${rowSelector('id', wait)} button[data-action="hold"]`, 'ok');
    await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: STEP_MS }, rowSelector('id', wait));
    await page.select('#queue-state', 'held');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector(`${rowSelector('id', wait)} button[data-action="release"]`);
    assert.equal(await queueState(wait), 'held');
    // The recipient domain filter.
    await page.select('#queue-state', '');
    await page.type('#queue-domain', 'elsewhere.test');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForFunction(() => /No message matches the filter/.test(document.querySelector('#main')?.textContent ?? ''));
    await page.click('#queue-domain', { count: 3 });
    await page.type('#queue-domain', 'remote.test');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector(rowSelector('id', wait));
    retried = later;
    heldId = wait;
    clean();
  });

  it('opens a message\'s timeline: every attempt with its relay, TLS and reply', async () => {
    const later = retried;
    assert.ok(later, 'the queue step ran');
    await go(page, 'messages');
    await page.click('#search-q', { count: 3 });
    await page.type('#search-q', 'later@remote.test');
    await page.keyboard.press('Enter');
    await page.waitForSelector(rowSelector('id', later));
    await shot(page, '05-messages');
    await page.click(`${rowSelector('id', later)} a`);
    await settled(page, 'messages');
    await page.waitForSelector('.timeline');
    await page.waitForFunction(() => document.querySelectorAll('.timeline [data-type="delivered"]').length === 1);
    assert.match(await page.$eval('#main h1', (e) => e.textContent ?? ''), new RegExp(later));
    const env = await page.$eval('#main', (e) => e.textContent ?? '');
    assert.match(env, /retry me/);
    assert.match(env, /alice@tern\.test/);
    const events = await page.$$eval('.timeline > li', (items) => items.map((li) => ({ type: (li as HTMLElement).dataset.type, text: li.textContent ?? '' })));
    assert.deepEqual(events.map((e) => e.type), ['queued', 'deferred', 'delivered']);
    const [, deferred, delivered] = events;
    const relay = new RegExp(`mx\\.remote\\.test \\[${PEER_IP.replace(/\./g, '\\.')}\\]:${peer.port}`);
    assert.match(deferred!.text, relay);
    assert.match(deferred!.text, /TLSv1\.[23]/);
    assert.match(deferred!.text, /451 4\.3\.2 Mailbox busy, try again later/);
    assert.match(deferred!.text, /Attempt1/);
    assert.match(delivered!.text, relay);
    assert.match(delivered!.text, /TLSv1\.[23]/);
    assert.match(delivered!.text, /Reply250 /);
    assert.match(delivered!.text, /Attempt2/);
    await shot(page, '06-timeline');

    // A message still in the spool: its header section, and its place in the queue with the actions.
    await page.evaluate((id) => (location.hash = `#/messages/${id}`), heldId);
    await page.waitForFunction((id) => document.querySelector('#main h1')?.textContent?.includes(id), {}, heldId);
    await page.waitForSelector('pre.headers');
    const headers = await page.$eval('pre.headers', (e) => e.textContent ?? '');
    assert.match(headers, /^Subject: hold me\r?$/m);
    assert.match(headers, /^Received: from /m);
    assert.ok(await page.$('#main button[data-action="release"]'), 'held: Release is offered');
    clean();
  });

  it('adds a suppression and removes it again', async () => {
    await go(page, 'suppressions');
    await page.type('#sup-address', 'Nobody@Remote.test');
    await page.type('#sup-reason', 'asked to stop <b>now</b>');
    await page.keyboard.press('Enter');
    await page.waitForSelector(rowSelector('address', 'nobody@remote.test'));
    const row = await page.$eval(rowSelector('address', 'nobody@remote.test'), (e) => e.textContent ?? '');
    // Data is text, never markup.
    assert.match(row, /asked to stop <b>now<\/b>/);
    assert.equal(await page.$(`${rowSelector('address', 'nobody@remote.test')} b`), null);
    // The hard bounce of gone@remote.test put it here by itself.
    await page.waitForSelector(rowSelector('address', 'gone@remote.test'));
    await shot(page, '07-suppressions');
    const asked = await confirm(page, `${rowSelector('address', 'nobody@remote.test')} button`, 'ok');
    assert.match(asked, /Remove nobody@remote\.test/);
    await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: STEP_MS }, rowSelector('address', 'nobody@remote.test'));
    const left = await page.evaluate(async () => (await (await fetch('/ui/api/suppressions')).json()) as { suppressions: { address: string }[] });
    assert.deepEqual(left.suppressions.map((s) => s.address), ['gone@remote.test']);
    clean();
  });

  it('makes an API key, shows it once with a copy button, and revokes it', async () => {
    await go(page, 'keys');
    await page.type('#key-name', 'shop-app');
    await page.type('#key-send-as', '@shop.test');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#key-dialog[open]');
    const key = await page.$eval('#key-value', (e) => (e as HTMLInputElement).value);
    assert.match(key, /^tern_/);
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLButtonElement | null)?.value), 'done');
    await page.click('#key-copy');
    await page.waitForFunction(() => (document.querySelector('#key-copied')?.textContent ?? '') !== '');
    await shot(page, '08-key-once');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#key-dialog:not([open])');
    assert.equal(await page.$eval('#key-value', (e) => (e as HTMLInputElement).value), '', 'the key is gone from the page');
    await page.waitForSelector(rowSelector('name', 'shop-app'));
    // The key works against the API until it is revoked.
    assert.equal((await fetch(`${base}/v1/events`, { headers: { authorization: `Bearer ${key}` } })).status, 200);
    await confirm(page, `${rowSelector('name', 'shop-app')} button`, 'ok');
    await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: STEP_MS }, rowSelector('name', 'shop-app'));
    assert.equal((await fetch(`${base}/v1/events`, { headers: { authorization: `Bearer ${key}` } })).status, 401);
    clean();
  });

  it('adds a user and deletes it; lists a webhook with its deliveries and deletes it', async () => {
    await go(page, 'users');
    await page.type('#user-address', 'dave@tern.test');
    await page.type('#user-password', 'a-long-enough-password');
    await page.keyboard.press('Enter');
    await page.waitForSelector(rowSelector('address', 'dave@tern.test'));
    assert.equal(await page.$(`${rowSelector('address', ADMIN.address)} button`), null, 'no delete button for yourself');
    await shot(page, '09-users');
    await confirm(page, `${rowSelector('address', 'dave@tern.test')} button`, 'ok');
    await page.waitForFunction((sel) => !document.querySelector(sel), { timeout: STEP_MS }, rowSelector('address', 'dave@tern.test'));

    // The webhook has had events by now (the mail above is the key's): its card shows owner, state and deliveries.
    await waitFor(async () => {
      const w = await page.evaluate(async () => (await (await fetch('/ui/api/webhooks')).json()) as { webhooks: { deliveries: unknown[] }[] });
      return w.webhooks[0]?.deliveries.length ? w : null;
    }, STEP_MS, 'a webhook delivery');
    assert.ok(hooked.length > 0);
    await go(page, 'webhooks');
    const card = `li[data-id="${webhookId}"]`;
    await page.waitForSelector(card);
    const text = await page.$eval(card, (e) => e.textContent ?? '');
    assert.match(text, /Ownerhooks-app/);
    assert.match(text, /enabled/);
    assert.match(text, /Recent deliveries \(\d+\)/);
    await page.click(`${card} summary`);
    await page.waitForFunction((sel) => /HTTP 200/.test(document.querySelector(sel)?.textContent ?? ''), {}, card);
    await shot(page, '10-webhooks');
    await confirm(page, `${card} button.danger`, 'ok');
    await page.waitForFunction(() => /No webhooks/.test(document.querySelector('#main')?.textContent ?? ''));
    clean();
  });

  it('reads well on a phone (390×844): no sideways scrolling, tables stack', async () => {
    const phone = await browser.newPage();
    phone.setDefaultTimeout(STEP_MS);
    watch(phone);
    try {
      await phone.emulate({ viewport: PHONE, userAgent: await browser.userAgent() });
      await phone.goto(`${base}/#/overview`, { waitUntil: 'load' });
      await settled(phone, 'overview');
      await phone.waitForSelector('#chart-flow canvas');
      const width = async () => phone.evaluate(() => document.documentElement.scrollWidth);
      assert.ok((await width()) <= PHONE.width, `overview is ${await width()} px wide`);
      await phone.screenshot({ path: path.join(SHOTS, '11-phone-overview.png') as `${string}.png`, fullPage: true });
      await go(phone, 'queue');
      await phone.waitForSelector('tr[data-id]');
      assert.ok((await width()) <= PHONE.width, `queue is ${await width()} px wide`);
      // Stacked: each cell on its own line, led by its column's name.
      const cell = await phone.$eval('tr[data-id] td[data-label]', (td) => ({ display: getComputedStyle(td).display, label: getComputedStyle(td, '::before').content }));
      assert.equal(cell.display, 'block');
      assert.equal(cell.label, '"Message"');
      await phone.screenshot({ path: path.join(SHOTS, '12-phone-queue.png') as `${string}.png`, fullPage: true });
      // Every nav link can be reached (the bar scrolls sideways inside itself).
      await go(phone, 'users');
      assert.ok((await width()) <= PHONE.width);
      clean();
    } finally {
      await phone.close();
    }
  });

  it('writes the overview screenshot and logs out', async () => {
    await go(page, 'overview');
    await page.waitForSelector('#chart-flow canvas');
    await page.waitForFunction(() => document.querySelector('.live')?.textContent === 'Live');
    await shot(page, '13-overview-end');
    if (process.env.UPDATE_DOCS_SCREENSHOT) {
      await page.screenshot({ path: DOCS_SHOT as `${string}.png`, optimizeForSpeed: false });
      assert.ok(fs.statSync(DOCS_SHOT).size < 300_000, 'a small PNG');
    }
    clean();

    await page.click('#logout');
    await page.waitForSelector('#login-form', { visible: true });
    assert.equal(await page.$eval('#main', (e) => e.childElementCount), 0, 'nothing of the dashboard is left on the page');
    // The session is gone on the server too.
    allowed = [{ status: 401, url: /\/ui\/api\/session$/ }];
    const status = await page.evaluate(async () => (await fetch('/ui/api/session')).status);
    assert.equal(status, 401);
    clean();
  });
});
