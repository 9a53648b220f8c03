import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ControlServer, controlRequest } from './control.ts';
import { silentLogger } from '../util/log.ts';

async function setup(handlers: ConstructorParameters<typeof ControlServer>[1]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-control-'));
  const server = new ControlServer(path.join(dir, 'control.sock'), handlers, silentLogger);
  await server.listen();
  return { server, sock: server.path, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Everything the server sends on one raw connection (the lines written 30 ms apart), until it ends it. */
function rawExchange(sock: string, lines: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock, () => lines.forEach((l, i) => setTimeout(() => s.writable && s.write(l), i * 30)));
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

test('one request per connection: a second line sent on it is never run, and one answer comes back', async () => {
  let runs = 0;
  // Slow enough that the second line arrives while the first is being answered.
  const t = await setup({ 'queue.delete': () => new Promise((r) => setTimeout(() => r(++runs), 150)) });
  try {
    const out = await rawExchange(t.sock, ['{"cmd":"queue.delete","id":"A"}\n', '{"cmd":"queue.delete","id":"B"}\n']);
    assert.deepEqual(out.split('\n').filter(Boolean).map((l) => JSON.parse(l)), [{ ok: true, result: 1 }]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runs, 1);
    assert.equal(await controlRequest(t.sock, { cmd: 'queue.delete' }), 2, 'the next connection is answered as usual');
  } finally {
    await t.server.close();
    t.cleanup();
  }
});

test('close() does not wait for a client that never sends its request, lets one being answered finish, and can be called twice', async () => {
  let finish: (v: unknown) => void = () => {};
  const t = await setup({ slow: () => new Promise((r) => (finish = r)) });
  const idle = net.connect(t.sock);
  idle.on('error', () => {});
  try {
    await new Promise((r) => idle.once('connect', r));
    const answered = controlRequest(t.sock, { cmd: 'slow' });
    await new Promise((r) => setTimeout(r, 50));
    const closing = Promise.all([t.server.close(), t.server.close()]);
    await new Promise((r) => setTimeout(r, 50));
    finish('done');
    assert.equal(await answered, 'done', 'the request in progress got its answer');
    const timedOut = await Promise.race([closing.then(() => false), new Promise((r) => setTimeout(r, 3000, true))]);
    assert.equal(timedOut, false, 'close() finished although the idle client never sent anything');
  } finally {
    idle.destroy();
    t.cleanup();
  }
});
