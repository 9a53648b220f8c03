// The HTTP API against bad and abusive input (issue 13, "Bad input"): a body
// over the limit is refused while it streams (413 before the client has
// finished sending), bytes that are not UTF-8 are a 400, any JSON at all
// gets a 4xx and never takes the server down, and a key over its hourly
// limit gets 429 with Retry-After while other keys still send.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import path from 'node:path';
import { ROOT, mailbox, waitFor, writeConfig } from '../helpers/server.ts';
import { createKey } from '../helpers/apikey.ts';


const MESSAGE_SIZE = 64 * 1024;

describe('HTTP API: bad input and limits', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let port: number;
  let key: string;
  let limited: string;

  before(async () => {
    cfg = writeConfig({
      listeners: [{ role: 'http', address: '127.0.0.1', port: 0 }],
      limits: { messageSize: MESSAGE_SIZE },
      submission: { messagesPerHour: 0 },
      domains: [{ name: 'tern.test', mailboxes: ['alice', 'bob'], delivery: 'discard' }, { name: 'box.test', mailboxes: ['carol'] }],
      plugins: [path.join(ROOT, 'examples/plugins/attachments.ts')],
    });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    port = tern.ports.find((p) => p.role === 'http')!.port;
    key = createKey(cfg.file, 'app', '--send-as', '@tern.test');
    limited = createKey(cfg.file, 'small', '--send-as', '@tern.test', '--messages-per-hour', '3');
  });

  after(async () => {
    await tern?.stop(500);
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const send = (k: string, body: string | Uint8Array, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${port}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json', ...headers }, body });
  const raw = (subject: string) => JSON.stringify({ from: 'alice@tern.test', to: ['bob@tern.test'], raw: `From: alice@tern.test\nSubject: ${subject}\n\nHi.\n` });

  /** Writes a request by hand: the head, then `chunks` of the body one by one, reading whatever the server answers meanwhile. */
  async function rawRequest(head: string, chunks: Buffer[], pauseMs: number): Promise<{ answer: string; sent: number }> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    let answer = '';
    let closed = false;
    sock.on('data', (d) => (answer += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => (closed = true));
    sock.write(head);
    let sent = 0;
    for (const c of chunks) {
      if (answer.includes('\r\n\r\n') || closed) break;
      sock.write(c);
      sent += c.length;
      await new Promise((r) => setTimeout(r, pauseMs));
    }
    const deadline = Date.now() + 5000;
    while (!answer.includes('\r\n\r\n') && !closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    sock.destroy();
    return { answer, sent };
  }

  it('413 from Content-Length alone, before any of the body is read', async () => {
    const head = `POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n`;
    const { answer, sent } = await rawRequest(head, [Buffer.alloc(1024, 0x20)], 50);
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.match(answer, /application\/problem\+json/);
    assert.ok(sent <= 1024, `answered after ${sent} body bytes`);
  });

  it('413 for a chunked body while it streams: the server answers long before the client would have finished', async () => {
    const head = `POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const chunk = Buffer.alloc(32 * 1024, 0x61);
    const framed = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    // 200 chunks of 32 KB would be 6.4 MB; the limit is 2 × 64 KB + 64 KB.
    const { answer, sent } = await rawRequest(head, Array.from({ length: 200 }, () => framed), 5);
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.ok(sent < 1024 * 1024, `the server stopped reading after ${sent} bytes`);
    assert.equal((await send(key, raw('alive'))).status, 202, 'the server still sends');
  });

  it('400 for a body that is not UTF-8, naming the problem; the same text in UTF-8 is sent', async () => {
    const good = Buffer.from(JSON.stringify({ from: 'alice@tern.test', to: ['bob@tern.test'], raw: 'From: alice@tern.test\nSubject: caf\u00e9\n\nx\n' }), 'utf8');
    const bad = Buffer.from(good.toString('latin1').replace('caf\u00c3\u00a9', 'caf\u00e9'), 'latin1'); // é as one Latin-1 byte
    assert.ok(!bad.equals(good));
    const res = await send(key, bad);
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { detail: string }).detail, /not valid UTF-8/);
    assert.equal((await send(key, good)).status, 202);
  });

  it('any JSON gets a 4xx problem, never a crash: wrong types at the top, deep nesting, __proto__, huge numbers, garbage', async () => {
    const bodies = [
      '', 'null', 'true', '42', '"text"', '[]', '[{"from":"alice@tern.test"}]', '{', '{"from":', '}{', '\u0000',
      '{"__proto__":{"admin":true},"from":"alice@tern.test","to":["bob@tern.test"],"raw":"x"}',
      '{"constructor":{"prototype":{"x":1}},"from":"alice@tern.test","to":["bob@tern.test"],"raw":"x"}',
      '['.repeat(5000) + ']'.repeat(5000),
      '{"a":'.repeat(3000) + '1' + '}'.repeat(3000),
      '{"from":"alice@tern.test","to":["bob@tern.test"],"raw":1e999999}',
      '{"from":"alice@tern.test","to":[' + '"x",'.repeat(5000) + '"y"],"raw":"x"}',
      '{"from":"alice@tern.test","to":["bob@tern.test"],"raw":"\\ud800"}',
      '{"from":{"address":{"address":"x"}},"to":["bob@tern.test"],"subject":"s","text":"t"}',
      '{"from":"alice@tern.test","to":["bob@tern.test"],"subject":"s","text":"t","headers":{"X-A\\r\\nBcc":"v"}}',
      '{"from":"alice@tern.test","to":["bob@tern.test"],"subject":"s","text":"t","attachments":[{"content":"!!!"}]}',
    ];
    for (const body of bodies) {
      const res = await send(key, body);
      assert.ok(res.status >= 400 && res.status < 500, `${res.status} for ${body.slice(0, 60)}`);
      assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, body.slice(0, 60));
      await res.arrayBuffer();
    }
    // Random bytes and random JSON-ish text.
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const alphabet = '{}[]":,0123456789.-eE truefalsnul\\abc';
    for (let i = 0; i < 200; i++) {
      const text = Array.from({ length: 1 + Math.floor(rnd() * 80) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join('');
      const res = await send(key, i % 2 === 0 ? text : Buffer.from(Array.from({ length: 40 }, () => Math.floor(rnd() * 256))));
      assert.ok(res.status >= 400 && res.status < 500, `${res.status} for ${JSON.stringify(text)}`);
      await res.arrayBuffer();
    }
    assert.equal((await send(key, raw('still here'))).status, 202);
  });

  it('a bad field name in headers or tags is named by its own path, once', async () => {
    const res = await send(key, '{"from":"alice@tern.test","to":["bob@tern.test"],"subject":"s","text":"t","headers":{"X Bad":"v"},"tags":{"ok":"1","b/ad":"2"}}');
    assert.equal(res.status, 400);
    const problem = (await res.json()) as { errors: { path: string; message: string }[] };
    assert.deepEqual(problem.errors.map((e) => e.path), ['/body/headers/X Bad', '/body/tags/b~1ad']);
    assert.match(problem.errors[0]!.message, /^invalid name: /);
  });

  it('a key over its --messages-per-hour gets 429 with Retry-After; refused sends do not count; other keys are not affected', async () => {
    // A refused send (unknown local recipient) gives its place back.
    const refused = await send(limited, JSON.stringify({ from: 'alice@tern.test', to: ['nobody@tern.test'], raw: 'Subject: x\n\nx\n' }));
    assert.equal(refused.status, 400);
    for (let i = 0; i < 3; i++) assert.equal((await send(limited, raw(`limited ${i}`))).status, 202, `send ${i}`);
    const res = await send(limited, raw('one too many'));
    assert.equal(res.status, 429);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.match(((await res.json()) as { detail: string }).detail, /3 per hour/);
    assert.equal((await send(key, raw('unlimited key'))).status, 202);
  });

  it('runs the policy stages on API mail as on submission: a plugin\'s data hook refuses an .exe and marks what it lets through', async () => {
    const built = (filename: string) =>
      JSON.stringify({ from: 'alice@tern.test', to: ['carol@box.test'], subject: `plugin ${filename}`, text: 'see attached', attachments: [{ filename, contentType: 'application/octet-stream', content: 'aGVsbG8=' }] });
    const refused = await send(key, built('setup.exe'));
    assert.equal(refused.status, 403);
    assert.match(((await refused.json()) as { detail: string }).detail, /5\.7\.1/);
    const ok = await send(key, built('notes.txt'));
    assert.equal(ok.status, 202);
    const file = await waitFor(() => mailbox(cfg.dataDir, 'box.test', 'carol')[0], 10_000, 'delivery');
    assert.match(fs.readFileSync(file, 'latin1'), /^X-Attachments: notes\.txt\r$/m);
  });
});
