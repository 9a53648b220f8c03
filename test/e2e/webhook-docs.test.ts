// The two ways docs/webhooks.md tells an application to verify Tern's POSTs
// ("Verifying a request (Node)"), run as printed against a real Tern: the
// receiver program with the standardwebhooks library, in a process of its
// own, and the `verify` function with node:crypto alone. The code is taken
// from the document; the only change is where the program listens
// (`.listen(8080)` binds every interface; tests bind 127.0.0.1, on a free port).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { ROOT, freePort, waitFor, writeConfig } from '../helpers/server.ts';
import { createKey } from '../helpers/apikey.ts';

/** The js blocks of the section, in order. */
function snippets(): string[] {
  const doc = fs.readFileSync(path.join(ROOT, 'docs/webhooks.md'), 'utf8');
  const start = doc.indexOf('\n### Verifying a request (Node)\n');
  assert.ok(start >= 0, 'docs/webhooks.md has "Verifying a request (Node)"');
  const end = doc.indexOf('\n## ', start);
  return [...doc.slice(start, end).matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

type Verify = (secret: string, body: Buffer, headers: http.IncomingHttpHeaders) => boolean;

interface Post {
  body: Buffer;
  headers: http.IncomingHttpHeaders;
}

describe('docs/webhooks.md: verifying a request, as printed', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let base: string;
  let key: string;
  let dir: string;
  const [library, plain] = snippets();
  const children: ChildProcess[] = [];
  const servers: http.Server[] = [];

  before(async () => {
    assert.ok(library && plain, 'two js blocks: the receiver with standardwebhooks, and verify() with node:crypto');
    cfg = writeConfig({ listeners: [{ role: 'http', address: '127.0.0.1', port: 0 }] });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    base = `http://127.0.0.1:${tern.ports.find((p) => p.role === 'http')!.port}`;
    key = createKey(cfg.file, 'app', '--send-as', 'alice@tern.test');
    // The programs import packages as an application's would: from a node_modules beside them.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-webhook-docs-'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  });

  after(async () => {
    for (const c of children) c.kill();
    for (const s of servers) s.close();
    await tern?.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  const api = async (route: string, body: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(base + route, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.ok(res.ok, `${route}: ${res.status} ${await res.clone().text()}`);
    return (await res.json()) as Record<string, unknown>;
  };
  const webhook = async (port: number, events: string[]): Promise<string> => ((await api('/v1/webhooks', { url: `http://127.0.0.1:${port}/hooks/tern`, events })).secret as string);
  const send = async (subject: string): Promise<string> => (await api('/v1/messages', { from: 'alice@tern.test', to: ['bob@tern.test'], subject, text: 'Hi.' })).id as string;

  it('the receiver program with standardwebhooks accepts Tern\'s POSTs and refuses a tampered one', async () => {
    const port = await freePort();
    const program = library!.replace('.listen(8080);', `.listen(${port}, '127.0.0.1', () => console.log('listening'));`);
    assert.notEqual(program, library, 'the program listens on 8080, as the document says');
    const file = path.join(dir, 'receiver.mjs');
    fs.writeFileSync(file, program);
    const secret = await webhook(port, ['delivered']);
    const child = spawn(process.execPath, [file], { env: { ...process.env, TERN_WEBHOOK_SECRET: secret }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
    await waitFor(() => out.includes('listening'), 10_000);

    const id = await send('Docs');
    // The program prints: webhook-id, the event's type, its recipient.
    await waitFor(() => /^\S+ delivered bob@tern\.test$/m.test(out), 10_000);
    const webhookId = /^(\S+) delivered bob@tern\.test$/m.exec(out)![1]!;
    const events = (await (await fetch(`${base}/v1/messages/${id}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { events: { id: string; type: string }[] };
    assert.equal(webhookId, events.events.find((e) => e.type === 'delivered')?.id, 'webhook-id is the event id');

    // Signed with another secret: 400, and nothing printed.
    const lines = out.split('\n').length;
    const forged = await fetch(`http://127.0.0.1:${port}/hooks/tern`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'webhook-id': webhookId, 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': 'v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=' },
      body: '{"type":"delivered","timestamp":"2026-12-07T05:31:11.573Z","data":{}}',
    });
    assert.equal(forged.status, 400);
    assert.equal(out.split('\n').length, lines);
  });

  it('verify() with node:crypto alone accepts Tern\'s POST and refuses a changed body, an old timestamp or another secret', async () => {
    const file = path.join(dir, 'verify.mjs');
    fs.writeFileSync(file, `${plain}\nexport { verify };\n`);
    const { verify } = (await import(pathToFileURL(file).href)) as { verify: Verify };

    const posts: Post[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        posts.push({ body: Buffer.concat(chunks), headers: req.headers });
        res.writeHead(204).end();
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const secret = await webhook((server.address() as { port: number }).port, ['queued']);
    await send('Plain');
    await waitFor(() => posts.length > 0, 10_000);
    const { body, headers } = posts[0]!;

    assert.equal(verify(secret, body, headers), true);
    assert.equal(verify(secret, Buffer.concat([body, Buffer.from(' ')]), headers), false, 'a changed body');
    // Signed right (as Tern signs) but 301 s old: refused for its age alone; the same signed now passes.
    const signedAt = (ts: number) => {
      const mac = createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64')).update(`${headers['webhook-id']}.${ts}.`).update(body).digest('base64');
      return { ...headers, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${mac}` };
    };
    const now = Math.floor(Date.now() / 1000);
    assert.equal(verify(secret, body, signedAt(now)), true);
    assert.equal(verify(secret, body, signedAt(now - 301)), false, 'a timestamp over 5 minutes old');
    const other = (await api('/v1/webhooks', { url: 'http://127.0.0.1:9/x' })).secret as string;
    assert.equal(verify(other, body, headers), false, 'another secret');
    // Several signatures (a key rotation): any one that matches will do.
    assert.equal(verify(secret, body, { ...headers, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')} ${headers['webhook-signature']}` }), true);
  });
});
