import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ControlServer, controlRequest, KEEPALIVE_MS, STREAM_SLICE } from './control.ts';
import { silentLogger } from '../util/log.ts';

async function setup(handlers: ConstructorParameters<typeof ControlServer>[1], options?: ConstructorParameters<typeof ControlServer>[3]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-control-'));
  const server = new ControlServer(path.join(dir, 'control.sock'), handlers, silentLogger, options);
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

test('a 100,000-item list arrives whole and byte for byte as JSON.stringify writes it, serialized only as fast as the reader takes it', { timeout: 60_000 }, async () => {
  let serialized = 0;
  const item = (i: number) => ({ id: `M${i}`, recipients: [{ address: `u${i}@x.test`, status: 'deferred' }], note: i % 7 ? undefined : 'x' });
  // Counts how far serialization got.
  const items = Array.from({ length: 100_000 }, (_, i) => ({ toJSON: () => (serialized++, item(i)) }));
  const expected = Array.from({ length: 100_000 }, (_, i) => item(i));
  const t = await setup({ 'queue.list': () => items, ping: () => 'pong' });
  try {
    // A reader that takes nothing for a while: the server must wait for it, not buffer everything.
    const chunks: Buffer[] = [];
    let pingAnswered = false;
    let serializedMeanwhile = 0;
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(t.sock, () => s.write('{"cmd":"queue.list"}\n'));
      s.pause();
      s.on('error', reject);
      setTimeout(() => {
        void controlRequest(t.sock, { cmd: 'ping' }).then((r) => {
          pingAnswered = r === 'pong';
          serializedMeanwhile = serialized;
          s.on('data', (d: Buffer) => chunks.push(d));
          s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
          s.resume();
        }, reject);
      }, 200);
    });
    assert.ok(pingAnswered, 'another request was answered while the list waited for its reader');
    assert.ok(serializedMeanwhile > 0 && serializedMeanwhile <= 20 * STREAM_SLICE, `a reader that takes nothing holds the server at a few slices, not the whole list (${serializedMeanwhile} serialized)`);
    assert.equal(raw, JSON.stringify({ ok: true, result: expected }) + '\n');
    assert.deepEqual(await controlRequest(t.sock, { cmd: 'queue.list' }), JSON.parse(JSON.stringify(expected)));
  } finally {
    await t.server.close();
    t.cleanup();
  }
});

test('requests wait until the server is ready, kept alive by spaces: a client whose timeout is shorter than the wait still gets its answer', { timeout: 20_000 }, async () => {
  let ready: () => void = () => {};
  const readyAt = new Promise<void>((r) => (ready = r));
  let runs = 0;
  const t = await setup({ 'queue.list': () => [++runs] }, { ready: () => readyAt });
  try {
    const answer = controlRequest(t.sock, { cmd: 'queue.list' }, KEEPALIVE_MS + 1_000);
    await new Promise((r) => setTimeout(r, 2 * KEEPALIVE_MS + 500));
    assert.equal(runs, 0, 'not run before ready');
    ready();
    assert.deepEqual(await answer, [1]);
    // A server that says nothing at all still times out.
    const silent = net.createServer(() => {});
    const quiet = path.join(path.dirname(t.sock), 'quiet.sock');
    await new Promise<void>((r) => silent.listen(quiet, r));
    await assert.rejects(controlRequest(quiet, { cmd: 'queue.list' }, 300), /did not answer/);
    silent.close();
  } finally {
    await t.server.close();
    t.cleanup();
  }
});

test('a generator result is sent as a JSON array, its items produced only as the reader takes them', { timeout: 30_000 }, async () => {
  let produced = 0;
  function* many(): Generator<{ n: number }> {
    for (let n = 0; n < 50_000; n++) {
      produced++;
      yield { n };
    }
  }
  const t = await setup({ 'queue.list': () => many(), empty: () => (function* () {})() });
  try {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(t.sock, () => s.write('{"cmd":"queue.list"}\n'));
      s.pause();
      s.on('error', reject);
      setTimeout(() => {
        assert.ok(produced > 0 && produced < 50_000, `produced ${produced} while nobody read`);
        let out = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => (out += d));
        s.on('end', () => resolve(out));
        s.resume();
      }, 300);
    });
    assert.equal(raw, JSON.stringify({ ok: true, result: Array.from({ length: 50_000 }, (_, n) => ({ n })) }) + '\n');
    assert.deepEqual(await controlRequest(t.sock, { cmd: 'empty' }), []);
  } finally {
    await t.server.close();
    t.cleanup();
  }
});
