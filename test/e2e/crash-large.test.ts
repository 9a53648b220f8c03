// Durability of the queue-file path: messages over 256 KiB are written to a
// file of their own under spool/tmp/ and renamed into spool/queue/ (smaller
// ones go to the journal). Several clients send a mix of small (1-10 KB)
// and large (300 KB - 2 MB) messages, each carrying the SHA-256 of its
// body, to a Tern in a child process, which is killed with SIGKILL twice:
// once at a random moment, once while large messages are mid-DATA (a
// partial one is on disk in spool/tmp/). After the last restart and the
// queue has drained:
// - every message whose client got a 250 is in each recipient's Maildir
//   exactly once, whole (the body's hash matches);
// - a message without a 250 (the connection died first) may be delivered
//   (RFC 5321 §6.1: the 250 may have been lost on its way), but only whole,
//   to all of its recipients or none, and at most once;
// - spool/tmp/ and the Maildirs' tmp/ are empty.
// A second test sends through a scripted smarthost: delivered at least
// once, whole, never lost.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { queuedIds } from './smtp-kit.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { ROOT, RawClient, mailbox, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';

const SMALL = [1_000, 10_000] as const;
const LARGE = [300_000, 2_000_000] as const;
/** What the spool keeps in memory before the message gets a file of its own (spool.ts WRITE_BATCH). */
const QUEUE_FILE_AT = 256 * 1024;
const WRITE = 64 * 1024;

interface Sent {
  seq: number;
  rcpts: string[];
  size: number;
  hash: string;
  /** acked: 250 after the dot; refused: any other reply; unknown: the connection died first. */
  outcome: 'acked' | 'refused' | 'unknown';
  reply?: string;
}

function randomInt(lo: number, hi: number): number {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/** Base64 lines of random bytes (never a leading dot), and the message around them. */
function makeMessage(seq: number, size: number, rcpts: string[]): { data: Buffer; hash: string } {
  const b64 = crypto.randomBytes(Math.ceil((size * 3) / 4)).toString('base64');
  const lines: string[] = [];
  for (let at = 0; at < b64.length; at += 76) lines.push(b64.slice(at, at + 76));
  const body = lines.join('\r\n') + '\r\n';
  const hash = crypto.createHash('sha256').update(body).digest('hex');
  const head = `From: load@load.test\r\nTo: ${rcpts.join(', ')}\r\nSubject: msg-${seq}\r\nX-Seq: ${seq}\r\nX-Body-SHA256: ${hash}\r\n\r\n`;
  return { data: Buffer.from(head + body, 'latin1'), hash };
}

/** X-Seq and whether the body matches the hash the sender put in the header. */
function readDelivered(data: Buffer): { seq: number; whole: boolean } {
  const text = data.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, 'a header section');
  const head = text.slice(0, end);
  const seq = Number(/^X-Seq: (\d+)$/m.exec(head)?.[1] ?? NaN);
  const want = /^X-Body-SHA256: ([0-9a-f]{64})$/m.exec(head)?.[1];
  const got = crypto.createHash('sha256').update(text.slice(end + 4), 'latin1').digest('hex');
  return { seq, whole: want === got };
}

/** The load: workers take the next message from here until told to stop. */
class Load {
  readonly sent: Sent[] = [];
  readonly errors: string[] = [];
  stopped = false;
  /** Set while a mid-DATA kill is wanted: the first large message past QUEUE_FILE_AT + 64 KiB stops there and calls it. */
  midData: (() => void) | null = null;
  #killed!: () => void;
  readonly killed = new Promise<void>((r) => (this.#killed = r));
  readonly #rcpts: () => string[];
  #nextSeq: number;

  constructor(firstSeq: number, rcpts: () => string[]) {
    this.#nextSeq = firstSeq;
    this.#rcpts = rcpts;
  }

  next(): Sent {
    const large = Math.random() < 0.35;
    const s: Sent = { seq: this.#nextSeq++, rcpts: this.#rcpts(), size: large ? randomInt(...LARGE) : randomInt(...SMALL), hash: '', outcome: 'unknown' };
    this.sent.push(s);
    return s;
  }

  /** The server is being killed: whatever fails from now on is expected. */
  stop(): void {
    this.stopped = true;
    this.#killed();
  }
}

async function worker(port: number, load: Load): Promise<void> {
  let c: RawClient;
  try {
    c = await RawClient.connect(port);
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.cmd('EHLO load.test'), /^250/);
  } catch (e) {
    if (!load.stopped) load.errors.push(`connect: ${String(e)}`);
    return;
  }
  const closed = new Promise<void>((r) => c.socket.once('close', () => r()));
  try {
    while (!load.stopped) {
      const m = load.next();
      const { data, hash } = makeMessage(m.seq, m.size, m.rcpts);
      m.hash = hash;
      // Pipelined: MAIL, RCPT…, DATA in one write, then the content.
      c.send(`MAIL FROM:<load@load.test>\r\n${m.rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`);
      for (let i = 0; i < 1 + m.rcpts.length; i++) assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^354 /);
      for (let at = 0; at < data.length; at += WRITE) {
        if (load.stopped) return;
        if (load.midData && at >= QUEUE_FILE_AT + WRITE) {
          // Stop here, mid-DATA, until the server is killed.
          const kill = load.midData;
          load.midData = null;
          kill();
          await load.killed;
          return;
        }
        if (!c.socket.write(data.subarray(at, at + WRITE))) await Promise.race([new Promise((r) => c.socket.once('drain', r)), closed]);
      }
      c.send('.\r\n');
      const r = await c.reply(30_000);
      m.reply = r;
      m.outcome = r.startsWith('250 ') ? 'acked' : 'refused';
    }
  } catch (e) {
    // The connection died with the server: the message in flight has no 250.
    if (!load.stopped) load.errors.push(String(e));
  } finally {
    c.close();
  }
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
}

async function kill9(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await exited(child);
  assert.equal(child.signalCode, 'SIGKILL');
}

/** `tern queue list --json` against the running server. */
function queueList(file: string): unknown[] {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'queue', 'list', '--json', '--config', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as unknown[];
}

/** Runs `workers` clients until `kill` decides the moment, then kills the server with SIGKILL. */
async function loadAndKill(port: number, load: Load, workers: number, kill: () => Promise<void>, child: ChildProcess): Promise<void> {
  const running = Promise.all(Array.from({ length: workers }, () => worker(port, load)));
  // A worker that fails early must not leave the test waiting for a moment that never comes.
  const endedEarly = running.then(() => {
    if (!load.stopped) throw new Error(`the load ended before the kill: ${load.errors.join('; ')}`);
  });
  endedEarly.catch(() => {}); // after the kill, an ended load is expected
  await Promise.race([kill(), endedEarly.then(() => new Promise<never>(() => {}))]);
  load.stop();
  await kill9(child);
  await running;
  assert.deepEqual(load.errors, [], 'no client error before the kill');
}

/** Waits until a large message has a partial file in spool/tmp/ beyond the first write batch. */
function midDataKill(load: Load, tmpDir: string): () => Promise<void> {
  return async () => {
    await new Promise<void>((r) => (load.midData = r));
    await waitFor(() => fs.readdirSync(tmpDir).some((f) => fs.statSync(path.join(tmpDir, f)).size >= QUEUE_FILE_AT), 10_000, 'a partial queue file in spool/tmp/');
  };
}

function tally(sent: Sent[]): string {
  const count = (f: (s: Sent) => boolean): number => sent.filter(f).length;
  const big = (s: Sent): boolean => s.size >= LARGE[0];
  return `${count((s) => s.outcome === 'acked')} acked (${count((s) => s.outcome === 'acked' && big(s))} large), ${count((s) => s.outcome === 'unknown')} without a reply (${count((s) => s.outcome === 'unknown' && big(s))} large), ${count((s) => s.outcome === 'refused')} refused`;
}

test('kill -9 with large and small messages: every 250 delivered exactly once and whole, nothing half-delivered', { timeout: 120_000 }, async (t: TestContext) => {
  const { file, dataDir, dir } = writeConfig();
  const tmpDir = path.join(dataDir, 'spool', 'tmp');
  const boxes = ['alice', 'bob'];
  // One recipient, or both (one file in each mailbox).
  const rcpts = (): string[] => (Math.random() < 0.3 ? ['alice@tern.test', 'bob@tern.test'] : [`${boxes[randomInt(0, 1)]}@tern.test`]);
  const loads: Load[] = [];
  const phases: string[] = [];
  let mark = Date.now();
  const phase = (name: string): void => {
    phases.push(`${name} ${Date.now() - mark}`);
    mark = Date.now();
  };
  let server: ChildProcess | undefined;
  try {
    // Round 1: killed at a random moment after the first 250.
    const first = await spawnServer(file);
    server = first.child;
    const a = new Load(0, rcpts);
    loads.push(a);
    const delay = randomInt(300, 2500);
    t.diagnostic(`round 1: kill ${delay} ms after the first 250`);
    await loadAndKill(first.ports.smtp!, a, 6, async () => {
      await waitFor(() => a.sent.some((s) => s.outcome === 'acked'), 10_000, 'a first 250');
      await new Promise((r) => setTimeout(r, delay));
    }, first.child);
    t.diagnostic(`round 1: ${tally(a.sent)}`);
    phase('round 1');

    // Round 2: recovery is delivering round 1's mail while new mail comes in;
    // killed while a large message is mid-DATA, its first 256 KiB in spool/tmp/.
    const second = await spawnServer(file);
    server = second.child;
    assert.deepEqual(fs.readdirSync(tmpDir), [], 'recovery emptied spool/tmp/');
    const b = new Load(100_000, rcpts);
    loads.push(b);
    await loadAndKill(second.ports.smtp!, b, 6, async () => {
      await waitFor(() => b.sent.some((s) => s.outcome === 'acked' && s.size >= LARGE[0]), 15_000, 'a large message acknowledged');
      await midDataKill(b, tmpDir)();
    }, second.child);
    t.diagnostic(`round 2: ${tally(b.sent)}`);
    phase('round 2');

    // Recovery, then the queue drains.
    const third = await spawnServer(file);
    server = third.child;
    assert.deepEqual(fs.readdirSync(tmpDir), [], 'recovery emptied spool/tmp/');
    const sent = loads.flatMap((l) => l.sent);
    const bySeq = new Map(sent.map((s) => [s.seq, s]));
    const delivered = (): Map<string, { seq: number; whole: boolean }[]> =>
      new Map(boxes.map((b) => [b, mailbox(dataDir, 'tern.test', b).map((f) => readDelivered(fs.readFileSync(f)))]));
    const missing = (): string[] => {
      const d = delivered();
      return sent.filter((s) => s.outcome === 'acked').flatMap((s) => s.rcpts.filter((r) => !d.get(r.split('@')[0]!)!.some((m) => m.seq === s.seq)).map((r) => `${s.seq} (${s.size} octets) to ${r}`));
    };
    await waitFor(() => missing().length === 0, 30_000, 'every acknowledged message in its mailboxes').catch((e: unknown) => {
      throw new Error(`${String(e)}; missing: ${missing().join(', ')}; queue: ${JSON.stringify(queueList(file)).slice(0, 3000)}`);
    });
    phase('restart and delivery');
    // Queue files and journal records, then the server's own view.
    await waitFor(() => queuedIds(dataDir).length === 0, 30_000, 'the queue to drain');
    assert.deepEqual(queueList(file), [], 'tern queue list is empty');
    phase('drain');

    const d = delivered();
    const files = new Map<string, number>(); // "seq box" → copies
    for (const [box, msgs] of d) {
      for (const m of msgs) {
        const s = bySeq.get(m.seq);
        assert.ok(s, `${box} has message ${m.seq}, which was never sent`);
        assert.ok(m.whole, `message ${m.seq} (${s.size} octets, ${s.outcome}) is whole in ${box}`);
        assert.ok(s.rcpts.includes(`${box}@tern.test`), `message ${m.seq} reached only its recipients`);
        files.set(`${m.seq} ${box}`, (files.get(`${m.seq} ${box}`) ?? 0) + 1);
      }
    }
    for (const s of sent) {
      const copies = s.rcpts.map((r) => files.get(`${s.seq} ${r.split('@')[0]}`) ?? 0);
      if (s.outcome === 'acked') assert.deepEqual(copies, s.rcpts.map(() => 1), `acknowledged message ${s.seq} (${s.size} octets): one file per recipient`);
      else {
        assert.ok(copies.every((n) => n === copies[0]) && copies[0]! <= 1, `message ${s.seq} without a 250 (${s.outcome}, ${s.size} octets): all recipients or none, once: ${copies.join(',')}`);
      }
    }
    assert.deepEqual(fs.readdirSync(tmpDir), [], 'spool/tmp/ is empty');
    for (const box of boxes) assert.deepEqual(fs.readdirSync(path.join(dataDir, 'mailboxes', 'tern.test', box, 'tmp')), [], `${box}'s Maildir tmp/ is empty`);

    // The run proved something only if the crashes hit both paths.
    const acked = sent.filter((s) => s.outcome === 'acked');
    assert.ok(acked.some((s) => s.size >= LARGE[0]) && acked.some((s) => s.size <= SMALL[1]), 'large and small messages were acknowledged');
    assert.ok(b.sent.some((s) => s.outcome === 'unknown' && s.size >= LARGE[0]), 'a large message was cut mid-DATA');
    const unackedDelivered = sent.filter((s) => s.outcome !== 'acked' && (files.get(`${s.seq} ${s.rcpts[0]!.split('@')[0]}`) ?? 0) > 0).length;
    t.diagnostic(`total: ${tally(sent)}; ${unackedDelivered} without a 250 delivered whole; phases (ms): ${phases.join(', ')}`);
  } finally {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGTERM');
      await exited(server);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kill -9 with mail to a remote smarthost: every 250 delivered at least once, whole', { timeout: 90_000 }, async (t: TestContext) => {
  const peer = await ScriptedPeer.start();
  const { file, dataDir, dir } = writeConfig({
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: ['127.0.0.1:1'], timeout: '1s' }, // never used: the smarthost is an IP
    outbound: { smarthost: { host: '127.0.0.1', port: peer.port, tls: 'none' } },
  });
  const tmpDir = path.join(dataDir, 'spool', 'tmp');
  let server: ChildProcess | undefined;
  try {
    const first = await spawnServer(file);
    server = first.child;
    const load = new Load(0, () => [`r${randomInt(1, 5)}@remote.test`]);
    // Killed while a large message is mid-DATA, after the peer has taken some mail.
    await loadAndKill(first.ports.smtp!, load, 4, async () => {
      await waitFor(() => peer.sessions.some((s) => s.messages.some((m) => m.data.length >= LARGE[0])), 15_000, 'a large message relayed');
      await midDataKill(load, tmpDir)();
    }, first.child);
    t.diagnostic(tally(load.sent));
    // What the peer had by the time the dead server's last bytes were read.
    await new Promise((r) => setTimeout(r, 200));
    const beforeKill = new Set(peer.sessions.flatMap((s) => s.messages));

    const second = await spawnServer(file);
    server = second.child;
    assert.deepEqual(fs.readdirSync(tmpDir), [], 'recovery emptied spool/tmp/');
    const received = (): { seq: number; whole: boolean }[] => peer.sessions.flatMap((s) => s.messages.map((m) => readDelivered(m.data)));
    await waitFor(() => {
      const seen = new Set(received().map((m) => m.seq));
      return load.sent.every((s) => s.outcome !== 'acked' || seen.has(s.seq));
    }, 30_000, 'every acknowledged message at the peer');
    // Queue files and journal records, then the server's own view.
    await waitFor(() => queuedIds(dataDir).length === 0, 30_000, 'the queue to drain');
    assert.deepEqual(queueList(file), [], 'tern queue list is empty');

    const bySeq = new Map(load.sent.map((s) => [s.seq, s]));
    const copies = new Map<number, number>();
    const perLife = new Map<string, number>(); // "seq before|after" → copies
    for (const pm of peer.sessions.flatMap((s) => s.messages)) {
      const m = readDelivered(pm.data);
      const s = bySeq.get(m.seq);
      assert.ok(s, `the peer got message ${m.seq}, which was never sent`);
      assert.ok(m.whole, `message ${m.seq} (${s.size} octets, ${s.outcome}) arrived whole`);
      copies.set(m.seq, (copies.get(m.seq) ?? 0) + 1);
      const life = `${m.seq} ${beforeKill.has(pm) ? 'before' : 'after'}`;
      perLife.set(life, (perLife.get(life) ?? 0) + 1);
    }
    // A repeat is allowed only across the crash: each server relays a message at most once.
    for (const [life, n] of perLife) assert.equal(n, 1, `message ${life} the kill relayed once`);
    for (const s of load.sent) if (s.outcome === 'acked') assert.ok((copies.get(s.seq) ?? 0) >= 1, `acknowledged message ${s.seq} relayed`);
    assert.deepEqual(fs.readdirSync(tmpDir), [], 'spool/tmp/ is empty');
    const acked = load.sent.filter((s) => s.outcome === 'acked');
    assert.ok(acked.some((s) => s.size >= LARGE[0]), 'large messages were acknowledged');
    const repeated = [...copies.values()].filter((n) => n > 1).length;
    t.diagnostic(`${copies.size} messages at the peer, ${repeated} of them more than once (allowed: the crash may cut the relay between its 250 and the record of it)`);
  } finally {
    if (server && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGTERM');
      await exited(server);
    }
    await peer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
