// `tern queue …` against a large queue (issue 11, break 9): the listing is
// complete when stdout is a pipe that a slow reader drains (it used to stop
// at exactly 64 KiB, the pipe's buffer, when process.exit() ran before the
// rest was written), and `retry --all` answers at once (it used to write
// the state of every message before answering, and timed out). A retry of
// a held message says it is held (issue 18).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Spool } from '../../src/spool/spool.ts';
import type { Envelope } from '../../src/spool/types.ts';
import { ROOT, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';

const HOUR = 3_600_000;
const MESSAGES = 3000;
const HELD = 100;

/**
 * Fills the spool before the server starts, as if these messages had been
 * tried once and deferred for an hour: local recipients in a discard
 * domain, so a retry delivers them without any network.
 */
async function fillSpool(dataDir: string): Promise<string[]> {
  const spool = new Spool({ dir: path.join(dataDir, 'spool'), fsync: false });
  spool.init();
  const ids: string[] = [];
  const one = async (i: number): Promise<void> => {
    const env: Envelope = {
      id: spool.newId(),
      sender: 'sender@tern.test',
      receivedAt: Date.now() - 60_000,
      smtputf8: false,
      recipients: [{ address: `user${i}@sink.test`, original: `user${i}@sink.test`, mailbox: { domain: 'sink.test', localPart: `user${i}` } }],
    };
    const w = spool.create(env);
    w.write(Buffer.from(`Subject: message ${i}\r\n\r\nbody\r\n`));
    const m = await w.commit();
    const held = i < HELD;
    await spool.writeState(env.id, { ...m.state, attempts: 1, nextAttempt: Date.now() + HOUR, lastReply: [{ code: 451, enhanced: '4.3.0', text: 'try later' }], held });
    ids[i] = env.id;
  };
  for (let i = 0; i < MESSAGES; i += 200) await Promise.all(Array.from({ length: Math.min(200, MESSAGES - i) }, (_, k) => one(i + k)));
  await spool.journal.close();
  return ids;
}

/** `tern …` with stdout to a pipe nobody reads for `stallMs`, then read to the end. */
async function tern(file: string, args: string[], stallMs = 0): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/tern.js'), ...args, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  // Paused, our side stops reading once its buffer is full, so the pipe fills and tern's writes must wait.
  child.stdout.pause();
  setTimeout(() => child.stdout.on('data', (d: Buffer) => out.push(d)).resume(), stallMs);
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // Whatever tern got into the pipe before it exited is still read: 'end' comes after the last byte.
  const [code] = await Promise.all([
    new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))),
    new Promise((resolve) => child.stdout.on('end', resolve)),
    new Promise((resolve) => child.stderr.on('end', resolve)),
  ]);
  return { code, stdout: Buffer.concat(out).toString(), stderr, ms: performance.now() - started };
}

test('queue list is complete through a slow pipe; retry --all answers at once for 3,000 messages; held stays held', { timeout: 180_000 }, async () => {
  const { file, dir, dataDir } = writeConfig({
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: 0 }],
    domains: [{ name: 'tern.test', mailboxes: ['sender'] }, { name: 'sink.test', mailboxes: '*', delivery: 'discard' }],
  });
  const ids = await fillSpool(dataDir);
  const heldIds = new Set(ids.slice(0, HELD));
  const server = await spawnServer(file);
  try {
    // The reader waits a second before it starts: the pipe (64 KiB) fills and tern must wait for it.
    const json = await tern(file, ['queue', 'list', '--json'], 1000);
    assert.equal(json.code, 0, json.stderr);
    assert.ok(json.stdout.length > 10 * 65_536, `a listing well over the pipe's buffer (${json.stdout.length} bytes)`);
    const list = JSON.parse(json.stdout) as { id: string; state: string }[];
    assert.equal(list.length, MESSAGES);
    assert.deepEqual(new Set(list.filter((m) => m.state === 'held').map((m) => m.id)), heldIds);

    const plain = await tern(file, ['queue', 'list'], 1000);
    assert.equal(plain.code, 0, plain.stderr);
    const lines = plain.stdout.trimEnd().split('\n');
    assert.equal(lines.length, MESSAGES + 2, 'header, one line per message, and the count');
    assert.equal(lines.at(-1), `${MESSAGES} messages`);

    // Issue 18: a held message is not "scheduled"; the answer says how to lift the hold.
    const heldId = ids[0]!;
    const retryHeld = await tern(file, ['queue', 'retry', heldId]);
    assert.equal(retryHeld.code, 1);
    assert.equal(
      retryHeld.stderr,
      `tern: server at ${dataDir} (control.sock; the dataDir of ${file}, given by --config)\n` +
        `tern queue retry: ${heldId} is held, so it was not retried; \`tern queue release ${heldId}\` lifts the hold and tries it now\n`,
    );

    // The yardstick: a command whose answer costs nothing, Node's start included.
    const baseline = await tern(file, ['queue', 'show', ids[1]!]);
    assert.equal(baseline.code, 0, baseline.stderr);
    const retry = await tern(file, ['queue', 'retry', '--all']);
    assert.equal(retry.code, 0, retry.stderr);
    assert.equal(retry.stdout, `${MESSAGES - HELD} messages scheduled for delivery now (${HELD} held messages left alone: \`tern queue release ID\` tries one)\n`);
    // The old one wrote 3,000 state files before answering (5.2 s here, against 1.1 s for the yardstick).
    assert.ok(retry.ms < baseline.ms + 1500, `retry --all took ${Math.round(retry.ms)} ms, queue show ${Math.round(baseline.ms)} ms`);

    // The work does follow the answer: every message not held is delivered (discarded) and leaves the queue.
    await waitFor(async () => {
      const r = await tern(file, ['queue', 'list', '--json']);
      return r.code === 0 && (JSON.parse(r.stdout) as unknown[]).length === HELD;
    }, 90_000, 'the retried messages to leave the queue');
    const left = JSON.parse((await tern(file, ['queue', 'list', '--json'])).stdout) as { id: string }[];
    assert.deepEqual(new Set(left.map((m) => m.id)), heldIds, 'only the held ones are left');
  } finally {
    server.child.kill('SIGTERM');
    await new Promise((r) => (server.child.exitCode !== null ? r(null) : server.child.once('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
