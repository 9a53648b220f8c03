// Several nodes (issue 17) when things break: a node killed with SIGKILL
// while another keeps serving (and the killed one starting again on the
// shared store), and PostgreSQL stopped and started while mail flows
// (nothing acknowledged is lost; the nodes recover by themselves). A killed
// node's queue is its own spool: the single-node crash tests (crash.test.ts)
// cover what a restart does with it. Real processes: the
// nodes are `tern serve` children, the store a private PostgreSQL cluster.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { requirePostgres, startPostgres, type PgCluster } from '../helpers/postgres.ts';
import { RawClient, mailbox, spawnServer, waitFor, writeConfig } from '../helpers/server.ts';

const skip = requirePostgres();

async function send(port: number, to: string, subject: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd('EHLO client.test');
    const m = await c.cmd('MAIL FROM:<someone@outside.test>');
    if (!m.startsWith('250')) return m;
    const r = await c.cmd(`RCPT TO:<${to}>`);
    if (!r.startsWith('250')) return r;
    await c.cmd('DATA');
    return await c.cmd(`Subject: ${subject}\r\n\r\nbody\r\n.`);
  } finally {
    c.close();
  }
}

describe('several nodes when things break', { skip }, () => {
  let cluster: PgCluster;
  let url: string;
  const children: ChildProcess[] = [];

  before(async () => {
    cluster = await startPostgres();
    url = await cluster.createDatabase('crash');
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await cluster?.destroy();
  });

  function config() {
    return writeConfig({
      listeners: [{ role: 'smtp', address: '127.0.0.1', port: 0 }],
      domains: [{ name: 'tern.test', mailboxes: ['bob'] }],
      store: { postgres: url },
    });
  }

  it('PostgreSQL stopped and started while two nodes take mail: every 250 is in a mailbox, and both nodes go on', async () => {
    const cfgs = [config(), config()];
    const nodes = await Promise.all(cfgs.map((c) => spawnServer(c.file)));
    children.push(...nodes.map((n) => n.child));
    const accepted: { node: number; subject: string }[] = [];
    let stopped = false;
    const load = (async () => {
      for (let i = 0; i < 120; i++) {
        const node = i % 2;
        const subject = `load ${i}`;
        const r = await send(nodes[node]!.ports.smtp!, 'bob@tern.test', subject);
        if (r.startsWith('250 ')) accepted.push({ node, subject });
        if (i === 30) {
          await cluster.stop();
          stopped = true;
        }
        if (i === 80) {
          await cluster.start();
          stopped = false;
        }
      }
    })();
    await load;
    assert.equal(stopped, false);
    assert.ok(accepted.length >= 100, `the nodes kept taking mail without the store (${accepted.length} of 120)`);
    for (const [n, cfg] of cfgs.entries()) {
      const want = accepted.filter((a) => a.node === n).length;
      await waitFor(() => mailbox(cfg.dataDir, 'tern.test', 'bob').length >= want || undefined, 15_000, `node ${n + 1}'s mail in its mailbox`);
      const files = mailbox(cfg.dataDir, 'tern.test', 'bob').map((f) => fs.readFileSync(f, 'utf8'));
      for (const a of accepted.filter((x) => x.node === n)) {
        assert.equal(files.filter((t) => t.includes(`Subject: ${a.subject}\r\n`)).length, 1, `${a.subject} delivered exactly once`);
      }
    }
  });

  it('a node killed with SIGKILL: the other keeps serving; the killed one starts again on the shared store, its mail there exactly once', async () => {
    const cfgA = config();
    const cfgB = config();
    const a = await spawnServer(cfgA.file);
    const b = await spawnServer(cfgB.file);
    children.push(a.child, b.child);
    assert.match(await send(a.ports.smtp!, 'bob@tern.test', 'before the kill'), /^250 /);
    a.child.kill('SIGKILL');
    await new Promise((r) => a.child.once('exit', r));
    assert.match(await send(b.ports.smtp!, 'bob@tern.test', 'while A is down'), /^250 /);
    await waitFor(() => mailbox(cfgB.dataDir, 'tern.test', 'bob').length >= 1 || undefined, 10_000, 'B delivers');
    const again = await spawnServer(cfgA.file);
    children.push(again.child);
    await waitFor(() => mailbox(cfgA.dataDir, 'tern.test', 'bob').length >= 1 || undefined, 10_000, 'A, back, has its mail delivered');
    assert.equal(mailbox(cfgA.dataDir, 'tern.test', 'bob').filter((f) => fs.readFileSync(f, 'utf8').includes('Subject: before the kill')).length, 1);
  });
});
