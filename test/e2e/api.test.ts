// The HTTP API end to end (issue 13): a real server with an http listener,
// real fetch, keys made by the real `tern apikey` code on the same store.
// A raw send lands in a Maildir and its events (queued with source "api",
// delivered) are readable through /v1/messages/{id} and /v1/events; so are
// an SMTP message's; keys see only their senders' mail; events survive a restart.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { runApiKey } from '../../src/cli/apikey.ts';
import { ROOT, RawClient, mailbox, waitFor, writeConfig } from '../helpers/server.ts';
import type { MessageEvent } from '../../src/events/events.ts';
import SwaggerParser from '@apidevtools/swagger-parser';
import { createKey } from '../helpers/apikey.ts';

const LISTENERS = [
  { role: 'smtp', address: '127.0.0.1', port: 0 },
  { role: 'http', address: '127.0.0.1', port: 0 },
];


describe('HTTP API', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let base: string;
  let alice: string;
  let other: string;
  let admin: string;

  const start = async () => {
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
  };

  before(async () => {
    cfg = writeConfig({ listeners: LISTENERS, trustedNetworks: ['127.0.0.0/8'] });
    await start();
    alice = createKey(cfg.file, 'alice-app', '--send-as', 'alice@tern.test');
    other = createKey(cfg.file, 'other-app', '--send-as', '@catch.test');
    admin = createKey(cfg.file, 'ops', '--admin');
  });

  after(async () => {
    await tern?.stop(500);
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const api = (path: string, key: string | null, init: RequestInit = {}) =>
    fetch(base + path, { ...init, headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });
  const post = (key: string | null, body: unknown) => api('/v1/messages', key, { method: 'POST', body: JSON.stringify(body) });

  async function expectProblem(res: Response, status: number, path?: string): Promise<{ detail: string; errors?: { path: string; message: string }[] }> {
    assert.equal(res.status, status);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const p = (await res.json()) as { status: number; title: string; detail: string; errors?: { path: string; message: string }[] };
    assert.equal(p.status, status);
    assert.ok(p.title && p.detail, JSON.stringify(p));
    if (path !== undefined) assert.ok(p.errors?.some((e) => e.path === path), `${path} in ${JSON.stringify(p.errors)}`);
    return p;
  }

  const RAW = 'From: Alice <alice@tern.test>\nTo: bob@tern.test\nSubject: via the API\n\nHello over HTTP.\n';

  it('refuses requests without a key or with a wrong one (401 problem+json)', async () => {
    await expectProblem(await api('/v1/events', null), 401);
    await expectProblem(await api('/v1/events', 'tern_not-a-key'), 401);
    await expectProblem(await post(null, { from: 'alice@tern.test', to: ['bob@tern.test'], raw: RAW }), 401);
  });

  it('validates bodies: unknown fields, wrong types and missing fields are 400 naming the path', async () => {
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], raw: RAW, subjet: 'typo' }), 400, '/body/subjet');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: 'bob@tern.test', raw: RAW }), 400, '/body/to');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: [42], raw: RAW }), 400, '/body/to/0');
    // Neither raw nor any content: read as the built form, which needs something to send.
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'] }), 400, '/body/text');
    await expectProblem(await post(alice, { to: ['bob@tern.test'], raw: RAW }), 400, '/body/from');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['not an address'], raw: RAW }), 400, '/body/to/0');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['nobody@tern.test'], raw: RAW }), 400, '/body/to/0');
    await expectProblem(await api('/v1/messages', alice, { method: 'POST', body: '{"from": ' }), 400);
    await expectProblem(await api('/v1/events?limit=0', alice), 400, '/query/limit');
    await expectProblem(await api('/v1/events?bogus=1', alice), 400, '/query/bogus');
  });

  it('refuses a sender outside the key\'s send-as (403), envelope or From:', async () => {
    await expectProblem(await post(alice, { from: 'bob@tern.test', to: ['bob@tern.test'], raw: RAW }), 403, '/body/from');
    const p = await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], raw: RAW.replace('alice@tern.test>', 'bob@tern.test>') }), 403);
    assert.match(p.detail, /From:/);
  });

  it('serves an OpenAPI 3.1 document built from the route schemas', async () => {
    const res = await api('/v1/openapi.json', null);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { required: string[]; additionalProperties: boolean } }> } }>> };
    assert.equal(doc.openapi, '3.1.0');
    assert.deepEqual(Object.keys(doc.paths).sort(), ['/v1/events', '/v1/messages', '/v1/messages/batch', '/v1/messages/{id}', '/v1/openapi.json', '/v1/suppressions', '/v1/suppressions/{address}', '/v1/webhooks', '/v1/webhooks/{id}']);
    const body = doc.paths['/v1/messages']!.post!.requestBody!.content['application/json']!.schema;
    assert.deepEqual(body.required, ['from']);
    assert.ok('raw' in (body as unknown as { properties: object }).properties && 'attachments' in (body as unknown as { properties: object }).properties);
    assert.equal(body.additionalProperties, false);
  });

  it('the OpenAPI document validates against the OpenAPI 3.1 schema (an independent validator, swagger-parser)', async () => {
    const doc = (await (await api('/v1/openapi.json', null)).json()) as object;
    // validate() checks the document against the official 3.1 JSON Schema and resolves every $ref; it throws naming the fault.
    await SwaggerParser.validate(structuredClone(doc) as never);
    // And it can fail: a path parameter must be required (OpenAPI 3.1 §4.8.12.1); one that is not is refused.
    const broken = structuredClone(doc) as { paths: Record<string, Record<string, { parameters: { in: string; required: boolean }[] }>> };
    broken.paths['/v1/messages/{id}']!.get!.parameters.find((p) => p.in === 'path')!.required = false;
    await assert.rejects(SwaggerParser.validate(broken as never));
  });

  let apiId = '';
  it('sends a raw message through intake: 202, Maildir, queued (source api) and delivered events', async () => {
    const res = await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], raw: RAW });
    assert.equal(res.status, 202);
    const r = (await res.json()) as { id: string; messageId: string; recipients: { address: string; status: string }[] };
    apiId = r.id;
    assert.match(r.messageId, /^<[^@>]+@mx\.tern\.test>$/);
    assert.deepEqual(r.recipients, [{ address: 'bob@tern.test', status: 'queued' }]);
    const files = await waitFor(() => (mailbox(cfg.dataDir, 'tern.test', 'bob').length === 1 ? mailbox(cfg.dataDir, 'tern.test', 'bob') : null), 10_000, 'delivery');
    assert.ok(files);
    const text = fs.readFileSync(files[0]!, 'utf8');
    // Intake's work: our Received (HTTP, the key), the Date fix-up, the Message-ID we answered with, CRLF line ends.
    assert.match(text, /Received: from unknown \(\[127\.0\.0\.1\]\)\r\n\tby mx\.tern\.test \(Tern\) with HTTP id /);
    assert.match(text, /\(authenticated as apikey:alice-app\)/);
    assert.match(text, /\r\nDate: /);
    assert.ok(text.includes(`Message-ID: ${r.messageId}\r\n`));
    assert.ok(text.includes('\r\n\r\nHello over HTTP.\r\n'));

    const m = await waitFor(async () => {
      const res = await api(`/v1/messages/${apiId}`, alice);
      if (res.status !== 200) return null;
      const m = (await res.json()) as { id: string; messageId: string; from: string; recipients: { address: string; status: string; attempts: number; lastReply: { code: number } | null }[]; events: MessageEvent[] };
      return m.recipients[0]?.status === 'delivered' ? m : null;
    }, 10_000, 'delivered status');
    assert.ok(m);
    assert.equal(m.id, apiId);
    assert.equal(m.messageId, r.messageId);
    assert.equal(m.from, 'alice@tern.test');
    assert.equal(m.recipients[0]!.attempts, 1);
    assert.equal(m.recipients[0]!.lastReply?.code, 250);
    assert.deepEqual(m.events.map((e) => e.type), ['queued', 'delivered']);
    assert.equal(m.events[0]!.data.source, 'api');

    const ev = (await (await api(`/v1/events?recipient=bob@tern.test&type=queued`, alice)).json()) as { events: MessageEvent[]; next: string };
    assert.ok(ev.events.some((e) => e.queueId === apiId && e.data.source === 'api'));
  });

  it('sends a built message composed by nodemailer: text, html, inline image, attachment, headers; Bcc only in the envelope', async () => {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const res = await post(alice, {
      from: { name: 'Alice', address: 'alice@tern.test' },
      to: ['bob@tern.test'],
      bcc: [{ name: 'Carol', address: 'carol@catch.test' }],
      subject: 'Built — with UTF-8',
      text: 'Plain text',
      html: '<p>HTML <img src="cid:logo@tern"></p>',
      headers: { 'X-Campaign': 'spring' },
      attachments: [
        { filename: 'logo.png', contentType: 'image/png', content: png.toString('base64'), contentId: 'logo@tern' },
        { filename: 'notes.txt', content: Buffer.from('notes').toString('base64') },
      ],
    });
    assert.equal(res.status, 202, await res.clone().text());
    const r = (await res.json()) as { id: string; messageId: string; recipients: { address: string }[] };
    assert.deepEqual(r.recipients.map((x) => x.address).sort(), ['bob@tern.test', 'carol@catch.test']);
    const file = await waitFor(() => mailbox(cfg.dataDir, 'catch.test', 'carol')[0], 10_000, 'bcc delivery');
    const text = fs.readFileSync(file, 'utf8');
    assert.ok(text.includes(`Message-ID: ${r.messageId}\r\n`));
    assert.match(text, /\r\nFrom: Alice <alice@tern\.test>\r\n/);
    assert.match(text, /\r\nSubject: =\?UTF-8\?/);
    assert.match(text, /\r\nX-Campaign: spring\r\n/);
    assert.match(text, /Content-Type: multipart\/related/);
    assert.match(text, /Content-Id: <logo@tern>/i);
    assert.match(text, /filename=notes\.txt/);
    assert.doesNotMatch(text, /^Bcc:/im);
    assert.match(text, /with HTTP id/);
  });

  it('refuses bad built input by path: mixed forms, header injection, structural headers, bad base64', async () => {
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], raw: RAW, subject: 'both' }), 400, '/body/subject');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], text: 'x', headers: { 'X-A': 'v\r\nBcc: evil@remote.test' } }), 400, '/body/headers/X-A');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], text: 'x', headers: { 'Bad Name': 'v' } }), 400);
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], text: 'x', headers: { From: 'bob@tern.test' } }), 400, '/body/headers/From');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], attachments: [{ content: 'abc' }] }), 400, '/body/attachments/0/content');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: ['bob@tern.test'], attachments: [{ content: 'a!b=' }] }), 400, '/body/attachments/0/content');
    await expectProblem(await post(alice, { from: 'alice@tern.test', to: [], text: 'x' }), 400, '/body/to');
    await expectProblem(await post(alice, { from: { address: 'bob@tern.test' }, to: ['bob@tern.test'], text: 'x' }), 403, '/body/from');
  });

  let smtpId = '';
  it('stores the events of mail that came over SMTP too', async () => {
    const c = await RawClient.connect(tern.ports.find((p) => p.role === 'smtp')!.port);
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<alice@tern.test>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<carol@catch.test>'), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    const reply = await c.cmd('From: alice@tern.test\r\nTo: carol@catch.test\r\nSubject: smtp,\r\n folded\r\nMessage-ID: <m1@client.test>\r\n\r\nbody\r\n.');
    await c.cmd('QUIT');
    c.close();
    smtpId = /queued as (\w+)/.exec(reply)![1]!;
    const m = await waitFor(async () => {
      const res = await api(`/v1/messages/${smtpId}`, alice);
      const m = res.status === 200 ? ((await res.json()) as { subject: string | null; messageId: string | null; recipients: { status: string }[]; events: MessageEvent[] }) : null;
      return m?.recipients[0]?.status === 'delivered' ? m : null;
    }, 10_000, 'smtp message delivered');
    assert.ok(m);
    assert.equal(m.subject, 'smtp, folded', 'unfolded');
    assert.equal(m.messageId, '<m1@client.test>');
    assert.deepEqual(m.events.map((e) => [e.type, e.data.source]), [['queued', 'smtp'], ['delivered', 'smtp']]);
  });

  it('scopes reads by send-as: another sender\'s message is 404 and absent from its events; admin reads all', async () => {
    await expectProblem(await api(`/v1/messages/${apiId}`, other), 404);
    const theirs = (await (await api('/v1/events', other)).json()) as { events: MessageEvent[]; next: string };
    assert.deepEqual(theirs.events, []);
    // Nothing to read yet: next stays the cursor given (here, the start), never null.
    assert.equal(theirs.next, '');
    assert.equal((await api(`/v1/messages/${apiId}`, admin)).status, 200);
    assert.equal((await api(`/v1/messages/${smtpId}`, admin)).status, 200);
  });

  it('pages /v1/events oldest first with next, which stays usable on the last page', async () => {
    const all = (await (await api('/v1/events?limit=1000', admin)).json()) as { events: MessageEvent[]; next: string };
    assert.ok(all.events.length >= 4, String(all.events.length));
    const ids = all.events.map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort());
    const paged: string[] = [];
    let cursor = '';
    for (let i = 0; i < 20; i++) {
      const page = (await (await api(`/v1/events?limit=1${cursor ? `&after=${cursor}` : ''}`, admin)).json()) as { events: MessageEvent[]; next: string };
      assert.equal(typeof page.next, 'string');
      if (page.events.length === 0) {
        assert.equal(page.next, cursor);
        break;
      }
      paged.push(...page.events.map((e) => e.id));
      cursor = page.next;
    }
    assert.deepEqual(paged, ids);
  });

  it('keeps events across a restart, and a revoked key gets 401', async () => {
    await tern.stop(500);
    await start();
    const res = await api(`/v1/messages/${apiId}`, alice);
    assert.equal(res.status, 200);
    const m = (await res.json()) as { events: MessageEvent[] };
    assert.deepEqual(m.events.map((e) => e.type), ['queued', 'delivered']);
    assert.equal(runApiKey(loadConfig(cfg.file), ['revoke', 'alice-app'], { write: () => true }, { write: () => true }), 0);
    // Another process revoked it: the server's key cache holds it at most a second (src/api/keys.ts).
    const revokedAt = Date.now();
    let res2 = await api(`/v1/messages/${apiId}`, alice);
    while (res2.status !== 401 && Date.now() - revokedAt < 3000) {
      await new Promise((r) => setTimeout(r, 100));
      res2 = await api(`/v1/messages/${apiId}`, alice);
    }
    await expectProblem(res2, 401);
    assert.ok(Date.now() - revokedAt < 2000, 'refused within a second or so');
  });
});

describe('tern apikey (the real command) and an https listener', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  before(async () => {
    cfg = writeConfig({ listeners: [{ role: 'http', address: '127.0.0.1', port: 0, tls: true }] });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
  });
  after(async () => {
    await tern?.stop(500);
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const tern$ = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'apikey', ...args, '--config', cfg.file], { encoding: 'utf8' });
  const get = (pathname: string, key: string) =>
    new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      const port = tern.ports.find((p) => p.role === 'http')!.port;
      // The self-signed certificate: this test checks that HTTPS is spoken, not the chain.
      https.get({ host: '127.0.0.1', port, path: pathname, headers: { authorization: `Bearer ${key}` }, rejectUnauthorized: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }));
      }).on('error', reject);
    });

  it('creates a key printed once, lists it without the key or its hash, and revokes it (401 after)', async () => {
    const created = tern$('create', 'ci', '--send-as', 'alice@tern.test', '--send-as', '@catch.test');
    assert.equal(created.status, 0, created.stderr);
    const key = created.stdout.trim();
    assert.match(key, /^tern_[A-Za-z0-9_-]{43}$/);
    assert.equal(tern$('create', 'ci').status, 1, 'a name is used once');
    assert.equal(tern$('create', 'bad name!').status, 1);
    const listed = tern$('list', '--json');
    assert.equal(listed.status, 0, listed.stderr);
    const keys = JSON.parse(listed.stdout) as Record<string, unknown>[];
    assert.deepEqual(keys.map((k) => [k.name, k.sendAs, k.admin]), [['ci', ['alice@tern.test', '@catch.test'], false]]);
    assert.ok(!listed.stdout.includes(key.slice(5)) && !('hash' in keys[0]!), 'neither the key nor its hash is listed');

    const ok = await get('/v1/events', key);
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(JSON.parse(ok.body), { events: [], next: '' });

    assert.equal(tern$('revoke', 'ci').status, 0);
    const revokedAt = Date.now();
    assert.equal(tern$('revoke', 'ci').status, 1);
    // The server keeps keys a second at most (src/api/keys.ts).
    let refused = await get('/v1/events', key);
    while (refused.status !== 401 && Date.now() - revokedAt < 3000) {
      await new Promise((r) => setTimeout(r, 100));
      refused = await get('/v1/events', key);
    }
    assert.ok(Date.now() - revokedAt < 2000, 'refused within a second or so');
    assert.equal(refused.status, 401);
    assert.match(refused.type, /^application\/problem\+json/);
  });
});
