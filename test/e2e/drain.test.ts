// `tern queue drain --to HOST:PORT` (issue 17, node life cycle): a node
// hands every queued message to another node over SMTP and removes each
// only after that node's 250. Two real Tern nodes on loopback; the real
// command line talks to the first one's control socket.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer } from '../helpers/scripted-peer.ts';
import { ROOT, RawClient, freePort, mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);

/** The real CLI, asynchronously (both nodes live in this process). */
async function tern(srv: TestServer, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [path.join(ROOT, 'bin/tern.js'), ...args, '--config', path.join(srv.dir, 'tern.yaml')], { encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

async function send(port: number, to: string[], subject: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<alice@tern.test> RET=HDRS ENVID=env-1'), /^250/);
    for (const t of to) assert.match(await c.cmd(`RCPT TO:<${t}> NOTIFY=FAILURE,DELAY`), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    const r = await c.cmd(`From: alice@tern.test\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n.`);
    return /queued as (\w+)/.exec(r)![1]!;
  } finally {
    c.close();
  }
}

describe('tern queue drain', () => {
  let dns: DnsServer;
  let a: TestServer;
  let b: TestServer;
  let mxPort: number;

  before(async () => {
    dns = await startDnsServer({
      'later.test': { MX: [{ preference: 10, exchange: 'mx.later.test' }] },
      'mx.later.test': { A: ['127.0.0.6'] },
    });
    mxPort = await freePort('127.0.0.6');
    const common = {
      dns: { servers: [dns.address], timeout: '1s' },
      outbound: { port: mxPort, timeouts: { connect: '1s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
      queue: { retrySchedule: ['1h'] },
    };
    // A: the node to retire; nobody answers at the MX, so its remote mail waits.
    a = await startServer({ ...common, trustedNetworks: ['127.0.0.0/8'] });
    // B: the node that takes over; it relays for A (trustedNetworks).
    b = await startServer({ ...common, trustedNetworks: ['127.0.0.0/8'] });
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await dns?.close();
  });

  it('a target that does not answer: nothing moves, nothing bounces, exit 1 with the reason; then the real drain moves all but the held one', async () => {
    const kept = await send(a.port('smtp'), ['pat@later.test', 'quinn@later.test'], 'drained');
    const held = await send(a.port('smtp'), ['rae@later.test'], 'held');
    await waitFor(() => a.tern.scheduler.list().filter((m) => m.recipients.every((r) => r.attempts >= 1)).length === 2, 10_000, 'a first failed attempt of both');
    assert.equal(await a.tern.scheduler.hold(held), true);

    const nowhere = await freePort('127.0.0.1');
    const failed = await tern(a, 'queue', 'drain', '--to', `127.0.0.1:${nowhere}`);
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stdout, /^0 messages handed to 127\.0\.0\.1:\d+$/m);
    assert.match(failed.stdout, new RegExp(`^not taken: ${kept}  \\(451 4\\.4\\.1 drain to 127\\.0\\.0\\.1:\\d+ failed`, 'm'));
    assert.match(failed.stdout, new RegExp(`1 held, not drained .*${held}`));
    assert.ok(a.tern.scheduler.get(kept), 'still queued on A');
    assert.equal(mailbox(a.dataDir, 'tern.test', 'alice').length, 0, 'no DSN: a drain never bounces');

    const done = await tern(a, 'queue', 'drain', `--to=127.0.0.1:${b.port('smtp')}`, '--json');
    const summary = JSON.parse(done.stdout) as { moved: number; held: string[]; notTaken: unknown[] };
    assert.deepEqual(summary.held, [held]);
    assert.equal(summary.moved, 1);
    assert.deepEqual(summary.notTaken, []);
    assert.equal(done.code, 1, 'a held message is left behind: not a clean drain');
    assert.equal(a.tern.scheduler.get(kept), undefined, 'removed from A after B took it');
    assert.ok(a.tern.scheduler.get(held), 'the held message stays on A');

    // B has it with the original envelope: sender, both recipients with their DSN parameters, RET and ENVID.
    const onB = b.tern.scheduler.list().find((m) => m.from === 'alice@tern.test');
    assert.ok(onB, 'queued on B');
    const env = b.tern.scheduler.show(onB.id)!.envelope;
    assert.deepEqual(env.recipients.map((r) => [r.address, r.notify]), [['pat@later.test', ['FAILURE', 'DELAY']], ['quinn@later.test', ['FAILURE', 'DELAY']]]);
    assert.equal(env.ret, 'HDRS');
    assert.equal(env.envid, 'env-1');

    // And B delivers it: the content is A's message, A's trace field included.
    const peer = await ScriptedPeer.start({ host: '127.0.0.6', port: mxPort });
    try {
      await tern(b, 'queue', 'retry', '--all');
      const got = await waitFor(() => peer.sessions.flatMap((s) => s.messages)[0], 10_000, 'delivery from B');
      const text = got.data.toString('utf8');
      assert.match(text, /Subject: drained/);
      assert.match(text, new RegExp(`with ESMTP id ${kept}`), 'A\'s Received field travelled with it');
    } finally {
      await peer.close();
    }
  });

  it('refuses a target that is not HOST:PORT', async () => {
    const r = await tern(a, 'queue', 'drain', '--to', 'nowhere');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /HOST:PORT/);
    const none = await tern(a, 'queue', 'drain');
    assert.equal(none.code, 2);
    assert.match(none.stderr, /needs --to HOST:PORT/);
    assert.ok(fs.existsSync(a.dataDir));
  });
});
