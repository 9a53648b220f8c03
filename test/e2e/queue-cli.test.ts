// `tern queue …` against a running server (a child process), and the queue
// surviving kill -9: deferred remote mail is delivered after the restart.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parse } from 'yaml';
import { queuedIds } from './smtp-kit.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { ROOT, RawClient, freePort, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';

function tern(file: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), ...args, '--config', file], { encoding: 'utf8' });
}

test('tern queue list/show/hold/release/retry/delete, and deferred mail survives kill -9', { timeout: 60_000 }, async () => {
  const dns = await startDnsServer({
    'later.test': { MX: [{ preference: 10, exchange: 'mx.later.test' }] },
    'mx.later.test': { A: ['127.0.0.6'] },
  });
  const port = await freePort('127.0.0.6');
  const { file, dir } = writeConfig({
    trustedNetworks: ['127.0.0.0/8'],
    dns: { servers: [dns.address], timeout: '1s' },
    outbound: { port, timeouts: { connect: '1s' } },
    queue: { retrySchedule: ['1h'] },
  });
  let peer: ScriptedPeer | undefined;
  let server = await spawnServer(file);
  try {
    const c = await RawClient.connect(server.ports.smtp!);
    await c.reply();
    await c.cmd('EHLO client.test');
    await c.cmd('MAIL FROM:<alice@tern.test>');
    await c.cmd('RCPT TO:<pat@later.test>');
    await c.cmd('RCPT TO:<quinn@later.test>');
    await c.cmd('DATA');
    const id = /queued as (\w+)/.exec(await c.cmd('Subject: deferred\r\n\r\nwaiting for the peer\r\n.'))![1]!;
    c.close();

    // Nobody listens at the MX yet: the message is deferred with the reason.
    type Listed = {
      id: string;
      from: string;
      recipients: { address: string; status: string; attempts: number; nextAttempt: string | null; lastReply: { code: number; enhanced: string | null; text: string } | null }[];
      size: number;
      createdAt: string;
      state: string;
    };
    const listed = await waitFor(() => {
      const r = tern(file, 'queue', 'list', '--json');
      const list = JSON.parse(r.stdout) as Listed[];
      return list.find((m) => m.id === id && m.recipients[0]!.attempts >= 1 && m.state === 'deferred');
    }, 10_000, 'a first failed attempt');
    // the README: {id, from, recipients: [{address, status, attempts, nextAttempt, lastReply}], size, createdAt, state}.
    assert.deepEqual(Object.keys(listed!).slice(0, 6), ['id', 'from', 'recipients', 'size', 'createdAt', 'state']);
    assert.equal(listed!.from, 'alice@tern.test');
    assert.ok(listed!.size > 0);
    assert.ok(Math.abs(Date.parse(listed!.createdAt) - Date.now()) < 60_000, listed!.createdAt);
    assert.deepEqual(listed!.recipients.map((r) => [r.address, r.status, r.attempts]), [['pat@later.test', 'deferred', 1], ['quinn@later.test', 'deferred', 1]]);
    const r0 = listed!.recipients[0]!;
    assert.deepEqual(Object.keys(r0), ['address', 'status', 'attempts', 'nextAttempt', 'lastReply']);
    assert.ok(Date.parse(r0.nextAttempt!) > Date.now() + 30 * 60_000, `retry in about an hour: ${r0.nextAttempt}`);
    // Nobody listens at the MX: our own reply, structured (RFC 3463 4.4.1), naming the host in its text.
    assert.deepEqual([r0.lastReply!.code, r0.lastReply!.enhanced], [451, '4.4.1'], r0.lastReply!.text);
    assert.match(r0.lastReply!.text, /127\.0\.0\.6/);
    const table = tern(file, 'queue', 'list');
    assert.equal(table.status, 0);
    assert.match(table.stdout, new RegExp(`^${id}\\s+\\d+s\\s+\\d+\\s+alice@tern\\.test\\s+pat@later\\.test,quinn@later\\.test\\s+in `, 'm'));
    const show = tern(file, 'queue', 'show', id);
    assert.match(show.stdout, /pat@later\.test {2}deferred {2}\(451 4\.4\.1 /);

    assert.match(tern(file, 'queue', 'hold', id).stdout, /held/);
    assert.match(tern(file, 'queue', 'list').stdout, new RegExp(`${id}.*held`));
    assert.match(tern(file, 'queue', 'release', id).stdout, /released/);
    assert.equal(tern(file, 'queue', 'show', 'NOSUCHID').status, 1);

    // kill -9 while deferred; the peer comes up; the restarted server delivers.
    server.child.kill('SIGKILL');
    await new Promise((r) => server.child.once('exit', r));
    peer = await ScriptedPeer.start({ host: '127.0.0.6', port });
    server = await spawnServer(file);
    assert.equal(JSON.parse(tern(file, 'queue', 'list', '--json').stdout)[0].id, id, 'still queued after kill -9');
    assert.match(tern(file, 'queue', 'retry', '--all').stdout, /1 message scheduled/);
    await waitFor(() => peer!.sessions.some((s) => s.messages.length === 1), 10_000, 'delivery after restart');
    const session = peer.sessions.find((s) => s.messages.length === 1)!;
    assert.equal(session.commands.filter((l) => l.startsWith('RCPT')).length, 2, 'both recipients in one transaction');
    assert.match(session.messages[0]!.data.toString(), /waiting for the peer/);
    await waitFor(() => JSON.parse(tern(file, 'queue', 'list', '--json').stdout).length === 0, 5000, 'an empty queue');

    // delete: a new deferred message, removed by the admin, without a bounce.
    await peer.close();
    peer = undefined;
    const c2 = await RawClient.connect(server.ports.smtp!);
    await c2.reply();
    await c2.cmd('EHLO client.test');
    await c2.cmd('MAIL FROM:<alice@tern.test>');
    await c2.cmd('RCPT TO:<pat@later.test>');
    await c2.cmd('DATA');
    const id2 = /queued as (\w+)/.exec(await c2.cmd('Subject: doomed\r\n\r\nx\r\n.'))![1]!;
    c2.close();
    await waitFor(() => JSON.parse(tern(file, 'queue', 'list', '--json').stdout).some((m: { id: string; recipients: { attempts: number }[] }) => m.id === id2 && m.recipients[0]!.attempts >= 1), 10_000, 'attempt');
    assert.match(tern(file, 'queue', 'delete', id2).stdout, /deleted/);
    assert.deepEqual(JSON.parse(tern(file, 'queue', 'list', '--json').stdout), []);
    const dataDir = (parse(fs.readFileSync(file, 'utf8')) as { dataDir: string }).dataDir;
    await waitFor(() => queuedIds(dataDir).length === 0, 2000, 'nothing left on disk');
  } finally {
    server.child.kill('SIGTERM');
    await new Promise((r) => (server.child.exitCode !== null ? r(null) : server.child.once('exit', r)));
    await peer?.close();
    await dns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
