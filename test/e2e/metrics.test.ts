// /metrics end to end (issue 14): a real server, real SMTP and HTTP
// clients, and the exposition parsed line by line as Prometheus would read
// it. Every family of the contract is there with its help text; a message
// over SMTP (its SPF checked against a loopback DNS server) and one over the
// API move the counters they should, by exactly that much; a wrong
// password counts as an AUTH failure; and from outside http.metricsFrom
// the metrics need an admin key.
//
// The registry is the process's (src/metrics/registry.ts): each check reads
// the figures before and after, and compares the difference.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { RawClient, mailbox, waitFor, writeConfig } from '../helpers/server.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { createKey } from '../helpers/apikey.ts';

/** The families of ../shared/CONTRACT.md, "Metrics", with their Prometheus types. */
const CONTRACT: Record<string, 'counter' | 'gauge' | 'histogram'> = {
  tern_smtp_connections_total: 'counter',
  tern_messages_received_total: 'counter',
  tern_deliveries_total: 'counter',
  tern_queue_messages: 'gauge',
  tern_delivery_duration_seconds: 'histogram',
  tern_tls_sessions_total: 'counter',
  tern_auth_failures_total: 'counter',
  tern_inbound_results_total: 'counter',
  tern_webhook_deliveries_total: 'counter',
  tern_suppressions: 'gauge',
};

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

/**
 * The Prometheus text format 0.0.4 (exposition_formats.md): `# HELP name
 * text`, `# TYPE name type`, and `name{label="value",…} number` lines,
 * label values escaped with \\, \" and \n. Anything else fails the test.
 */
function parseExposition(text: string): Exposition {
  const out: Exposition = { help: new Map(), type: new Map(), samples: [] };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      (m[1] === 'HELP' ? out.help : out.type).set(m[2]!, m[3]!);
      continue;
    }
    assert.ok(!line.startsWith('#'), `a comment line of an unknown kind: ${line}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y;
    for (let at = 0; at < body.length; ) {
      label.lastIndex = at;
      const l = label.exec(body);
      assert.ok(l, `bad labels in: ${line}`);
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      at = label.lastIndex;
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value) || m[3] === 'NaN', `bad value in: ${line}`);
    out.samples.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** The one sample with exactly these labels; 0 when the series does not exist yet. */
function valueOf(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const keys = Object.keys(labels);
  const found = e.samples.filter((s) => s.name === name && Object.keys(s.labels).length === keys.length && keys.every((k) => s.labels[k] === labels[k]));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value ?? 0;
}

/** The sum of the samples whose labels include these (a family's total over the labels left out). */
function sumOf(e: Exposition, name: string, labels: Record<string, string>): number {
  return e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}


describe('/metrics', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let dns: DnsServer;
  let tern: RunningTern;
  let base: string;
  let sender: string;
  const port = (role: string) => tern.ports.find((p) => p.role === role)!.port;

  const scrape = async (): Promise<Exposition> => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };

  before(async () => {
    dns = await startDnsServer({ 'pass.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] } });
    cfg = writeConfig({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0 },
        { role: 'submission', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0 },
      ],
      dns: { servers: [dns.address], timeout: '500ms' },
      inbound: { enabled: true },
    });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${port('http')}`;
    sender = createKey(cfg.file, 'metrics-app', '--send-as', 'alice@tern.test');
  });

  after(async () => {
    await tern?.stop(500);
    await dns?.close();
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  it('serves the text format from loopback without a key: every contract family, with HELP and TYPE', async () => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const e = parseExposition(await res.text());
    for (const [name, type] of Object.entries(CONTRACT)) {
      assert.ok((e.help.get(name) ?? '').length > 10, `HELP for ${name}`);
      assert.equal(e.type.get(name), type, `TYPE of ${name}`);
    }
    // Series that exist before anything happened, so rate() sees the first increment.
    for (const listener of ['smtp', 'submission', 'submissions']) assert.ok(e.samples.some((s) => s.name === 'tern_smtp_connections_total' && s.labels.listener === listener), listener);
    for (const state of ['active', 'deferred', 'held']) assert.ok(e.samples.some((s) => s.name === 'tern_queue_messages' && s.labels.state === state), state);
    assert.ok(e.samples.some((s) => s.name === 'tern_delivery_duration_seconds_bucket' && s.labels.transport === 'maildir' && s.labels.le === '+Inf'));
  });

  it('counts a message over SMTP and one over the API: connection, inbound results, received by source, delivered by transport, duration', async () => {
    const t0 = await scrape();
    const c = await RawClient.connect(port('smtp'));
    assert.match(await c.reply(), /^220/);
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<someone@pass.test>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<bob@tern.test>'), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    assert.match(await c.cmd('From: someone@pass.test\r\nTo: bob@tern.test\r\nSubject: counted\r\n\r\nbody\r\n.'), /^250/);
    await c.cmd('QUIT');
    c.close();
    const res = await fetch(`${base}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sender}`, 'content-type': 'application/json' },
      body: JSON.stringify({ from: 'alice@tern.test', to: ['bob@tern.test'], raw: 'From: alice@tern.test\nTo: bob@tern.test\nSubject: counted too\n\nbody\n' }),
    });
    assert.equal(res.status, 202, await res.clone().text());
    await waitFor(() => mailbox(cfg.dataDir, 'tern.test', 'bob').length === 2, 10_000, 'both delivered');
    const delivered = (e: Exposition) => valueOf(e, 'tern_deliveries_total', { transport: 'maildir', result: 'delivered' });
    // The result is counted when the transport returns, just after the file is in place.
    const t1 = (await waitFor(async () => {
      const e = await scrape();
      return delivered(e) - delivered(t0) >= 2 ? e : null;
    }, 5000, 'delivery results counted'))!;

    const diff = (name: string, labels: Record<string, string> = {}) => valueOf(t1, name, labels) - valueOf(t0, name, labels);
    assert.equal(diff('tern_smtp_connections_total', { listener: 'smtp' }), 1);
    assert.equal(diff('tern_smtp_connections_total', { listener: 'submission' }), 0);
    assert.equal(diff('tern_messages_received_total', { source: 'smtp' }), 1);
    assert.equal(diff('tern_messages_received_total', { source: 'api' }), 1);
    assert.equal(diff('tern_messages_received_total', { source: 'submission' }), 0);
    // The inbound checks ran for the SMTP message only (the API's is ours): SPF passes, no signature, no DMARC record, no ARC chain.
    for (const [check, result] of [['spf', 'pass'], ['dkim', 'none'], ['dmarc', 'none'], ['arc', 'none']] as const) {
      assert.equal(diff('tern_inbound_results_total', { check, result }), 1, `${check}=${result}`);
      assert.equal(sumOf(t1, 'tern_inbound_results_total', { check }) - sumOf(t0, 'tern_inbound_results_total', { check }), 1, `one ${check} result`);
    }
    assert.equal(diff('tern_deliveries_total', { transport: 'maildir', result: 'delivered' }), 2);
    assert.equal(diff('tern_deliveries_total', { transport: 'maildir', result: 'deferred' }), 0);
    assert.equal(diff('tern_delivery_duration_seconds_count', { transport: 'maildir' }), 2);
    // Local delivery right after acceptance: well under a minute, and a histogram's buckets add up.
    assert.equal(diff('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '60' }), 2);
    assert.equal(diff('tern_delivery_duration_seconds_bucket', { transport: 'maildir', le: '+Inf' }), 2);
    assert.ok(diff('tern_delivery_duration_seconds_sum', { transport: 'maildir' }) < 60);
    // Nothing left in the queue.
    for (const state of ['active', 'deferred', 'held']) assert.equal(valueOf(t1, 'tern_queue_messages', { state }), 0, state);
  });

  it('counts a wrong password as an AUTH failure, and the STARTTLS before it as an inbound TLS session', async () => {
    const t0 = await scrape();
    const c = await RawClient.connect(port('submission'));
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.test'), /STARTTLS/);
    assert.match(await c.cmd('STARTTLS'), /^220/);
    await c.starttls();
    assert.match(await c.cmd('EHLO client.test'), /AUTH/);
    const plain = Buffer.from('\0alice@tern.test\0not-the-password').toString('base64');
    assert.match(await c.cmd(`AUTH PLAIN ${plain}`), /^535 5\.7\.8/);
    await c.cmd('QUIT');
    c.close();
    const t1 = await scrape();
    assert.equal(valueOf(t1, 'tern_auth_failures_total') - valueOf(t0, 'tern_auth_failures_total'), 1);
    assert.equal(valueOf(t1, 'tern_smtp_connections_total', { listener: 'submission' }) - valueOf(t0, 'tern_smtp_connections_total', { listener: 'submission' }), 1);
    assert.equal(sumOf(t1, 'tern_tls_sessions_total', { direction: 'inbound' }) - sumOf(t0, 'tern_tls_sessions_total', { direction: 'inbound' }), 1);
    assert.equal(valueOf(t1, 'tern_tls_sessions_total', { direction: 'inbound', version: 'TLSv1.3' }) - valueOf(t0, 'tern_tls_sessions_total', { direction: 'inbound', version: 'TLSv1.3' }), 1);
  });
});

describe('/metrics from outside http.metricsFrom', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let base: string;

  before(async () => {
    // Loopback is not in the list: this test's requests come from outside it.
    cfg = writeConfig({ listeners: [{ role: 'http', address: '127.0.0.1', port: 0 }], http: { metricsFrom: ['192.0.2.0/24'] } });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
  });

  after(async () => {
    await tern?.stop(500);
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  it('needs a key (401 without), an admin one (403 with another), and then serves the metrics', async () => {
    const get = (key: string | null) => fetch(`${base}/metrics`, key ? { headers: { authorization: `Bearer ${key}` } } : {});
    assert.equal((await get(null)).status, 401);
    assert.equal((await get(createKey(cfg.file, 'app', '--send-as', 'alice@tern.test'))).status, 403);
    const res = await get(createKey(cfg.file, 'prometheus', '--admin'));
    assert.equal(res.status, 200);
    const e = parseExposition(await res.text());
    for (const name of Object.keys(CONTRACT)) assert.ok(e.help.has(name), name);
  });
});
