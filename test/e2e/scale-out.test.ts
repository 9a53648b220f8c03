// Several nodes sharing state through PostgreSQL (issue 17): two real Tern
// nodes, each with its own data directory and spool, both with
// `store.postgres` on one database of a private cluster. What one node (or
// the `tern` command run against its config) writes, the other sees.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { requirePostgres, startPostgres, type PgCluster } from '../helpers/postgres.ts';
import { RawClient, waitFor, writeConfig } from '../helpers/server.ts';
import { createKey } from '../helpers/apikey.ts';
import { loadConfig } from '../../src/config/load.ts';
import { runUser } from '../../src/cli/user.ts';
import { SYNC_MS } from '../../src/policy/shared-counts.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';

const skip = requirePostgres();

interface Node {
  tern: RunningTern;
  file: string;
  base: string;
  port(role: string): number;
}

async function startNode(url: string): Promise<Node> {
  const cfg = writeConfig({
    listeners: [
      { role: 'smtp', address: '127.0.0.1', port: 0 },
      { role: 'submission', address: '127.0.0.1', port: 0 },
      { role: 'http', address: '127.0.0.1', port: 0 },
    ],
    domains: [{ name: 'tern.test', mailboxes: ['alice', 'bob', 'carol'] }, { name: 'sink.test', delivery: 'discard' }],
    store: { postgres: url },
  });
  const tern = await startTern(loadConfig(cfg.file), { log: silentLogger });
  const port = (role: string) => tern.ports.find((p) => p.role === role)!.port;
  return { tern, file: cfg.file, base: `http://127.0.0.1:${port('http')}`, port };
}

async function addUser(file: string, address: string, password: string, ...flags: string[]): Promise<void> {
  const sink = { write: () => true };
  const code = await runUser(loadConfig(file), ['add', address, ...flags], { stdin: Readable.from([`${password}\n`]), stdout: sink, stderr: sink, isTTY: false });
  assert.equal(code, 0);
}

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

describe('two nodes, one PostgreSQL store', { skip }, () => {
  let cluster: PgCluster;
  let a: Node;
  let b: Node;

  before(async () => {
    cluster = await startPostgres();
    const url = await cluster.createDatabase('scale_out');
    // Both start at once: the schema is made once (an advisory lock in the migration).
    [a, b] = await Promise.all([startNode(url), startNode(url)]);
  });

  after(async () => {
    await a?.tern.stop(500);
    await b?.tern.stop(500);
    await cluster?.destroy();
  });

  it('a user added with `tern user add` against one node logs in on the other', async () => {
    await addUser(a.file, 'carol@tern.test', 'carol-secret-password');
    const c = await RawClient.connect(b.port('submission'));
    try {
      await c.reply();
      await c.cmd('EHLO client.test');
      assert.match(await c.cmd('STARTTLS'), /^220/);
      await c.starttls();
      await c.cmd('EHLO client.test');
      assert.match(await c.cmd(`AUTH PLAIN ${plain('carol@tern.test', 'carol-secret-password')}`), /^235 /);
    } finally {
      c.close();
    }
  });

  it('an API key made on one node sends through the other, and its message and events read back through the first', async () => {
    const key = createKey(a.file, 'app', '--send-as', '@tern.test');
    const post = await fetch(`${b.base}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ from: 'alice@tern.test', to: ['someone@sink.test'], subject: 'across nodes', text: 'hello' }),
    });
    assert.equal(post.status, 202, await post.clone().text());
    const { id } = (await post.json()) as { id: string };
    const view = await waitFor(async () => {
      const r = await fetch(`${a.base}/v1/messages/${id}`, { headers: { authorization: `Bearer ${key}` } });
      if (r.status !== 200) return undefined;
      const m = (await r.json()) as { subject?: string; events: { type: string }[] };
      return m.events.some((e) => e.type === 'delivered') ? m : undefined;
    }, 10_000, 'the message and its delivery, read through the other node');
    assert.equal(view!.subject, 'across nodes');
  });

  it('a suppression added through one node is listed and enforced by the other (told by NOTIFY)', async () => {
    const key = createKey(b.file, 'ops', '--admin', '--send-as', '@tern.test');
    const put = await fetch(`${b.base}/v1/suppressions/blocked@remote.test`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'asked' }),
    });
    assert.ok(put.status === 200 || put.status === 201, await put.clone().text());
    const list = await fetch(`${a.base}/v1/suppressions`, { headers: { authorization: `Bearer ${key}` } });
    assert.match(await list.text(), /blocked@remote\.test/);
    // Node A's in-memory list learns of it from the announcement, well before its 30 s safety re-read.
    const sent = await waitFor(async () => {
      const r = await fetch(`${a.base}/v1/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ from: 'alice@tern.test', to: ['blocked@remote.test'], subject: 'to a suppressed address', text: 'x' }),
      });
      const body = (await r.json()) as { recipients: { address: string; status: string }[] };
      return body.recipients[0]?.status === 'suppressed' ? body : undefined;
    }, 5000, 'node A enforcing the suppression made through node B');
    assert.equal(sent!.recipients[0]!.status, 'suppressed');
  });

  it('PostgreSQL stopped: a node still takes mail into its spool and delivers it; the events are written once it is back', async () => {
    const key = createKey(a.file, 'reader', '--admin');
    await cluster.stop();
    let id: string;
    try {
      const c = await RawClient.connect(a.port('smtp'));
      try {
        await c.reply();
        await c.cmd('EHLO client.test');
        assert.match(await c.cmd('MAIL FROM:<someone@outside.test>'), /^250/);
        assert.match(await c.cmd('RCPT TO:<bob@tern.test>'), /^250/);
        assert.match(await c.cmd('DATA'), /^354/);
        const r = await c.cmd('Subject: during the outage\r\n\r\nstill here\r\n.');
        assert.match(r, /^250 /, 'accepted without the shared store');
        id = /queued as (\w+)/.exec(r)![1]!;
      } finally {
        c.close();
      }
      await waitFor(() => !a.tern.scheduler.get(id), 10_000, 'delivered to the mailbox while PostgreSQL is down');
    } finally {
      await cluster.start();
    }
    // The events held in memory go in with the next write, and any node can read them.
    const view = await waitFor(async () => {
      const r = await fetch(`${b.base}/v1/messages/${id!}`, { headers: { authorization: `Bearer ${key}` } });
      if (r.status !== 200) return undefined;
      const m = (await r.json()) as { events: { type: string }[] };
      return m.events.some((e) => e.type === 'delivered') ? m : undefined;
    }, 15_000, 'the outage\'s events, written after PostgreSQL came back');
    assert.deepEqual(view!.events.map((e) => e.type), ['queued', 'delivered']);
  });

  it('a user\'s hourly sending limit holds across nodes (counts exchanged every second)', async () => {
    await addUser(a.file, 'dave@tern.test', 'dave-secret-password', '--messages-per-hour', '2');
    const submit = async (node: Node): Promise<string> => {
      const c = await RawClient.connect(node.port('submission'));
      try {
        await c.reply();
        await c.cmd('EHLO client.test');
        await c.cmd('STARTTLS');
        await c.starttls();
        await c.cmd('EHLO client.test');
        assert.match(await c.cmd(`AUTH PLAIN ${plain('dave@tern.test', 'dave-secret-password')}`), /^235 /);
        const mail = await c.cmd('MAIL FROM:<dave@tern.test>');
        if (!mail.startsWith('250')) return mail;
        assert.match(await c.cmd('RCPT TO:<someone@sink.test>'), /^250/);
        assert.match(await c.cmd('DATA'), /^354/);
        return await c.cmd('From: dave@tern.test\r\nSubject: rate\r\n\r\nx\r\n.');
      } finally {
        c.close();
      }
    };
    assert.match(await submit(a), /^250 /);
    assert.match(await submit(b), /^250 /);
    // Within two syncs (one to send, one to read: 2 × SYNC_MS) each node knows what the other sent; slack for a loaded machine.
    await new Promise((r) => setTimeout(r, 2 * SYNC_MS + 1500));
    assert.match(await submit(a), /^450 4\.7\.1 Message rate limit exceeded \(2 per hour\)/);
    assert.match(await submit(b), /^450 4\.7\.1 /);
  });

  it('webhook events of mail through both nodes arrive exactly once each, whichever node sends them', async () => {
    const seen = new Map<string, number>();
    const receiver = http.createServer((req, res) => {
      const id = String(req.headers['webhook-id']);
      req.resume();
      req.on('end', () => {
        seen.set(id, (seen.get(id) ?? 0) + 1);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      const key = createKey(a.file, 'hooks', '--send-as', '@tern.test');
      const made = await fetch(`${a.base}/v1/webhooks`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`, events: ['queued', 'delivered'] }),
      });
      assert.equal(made.status, 201, await made.clone().text());
      const N = 20;
      for (let i = 0; i < N; i++) {
        const node = i % 2 === 0 ? a : b;
        const r = await fetch(`${node.base}/v1/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ from: 'alice@tern.test', to: [`r${i}@sink.test`], subject: `hook ${i}`, text: 'x' }),
        });
        assert.equal(r.status, 202);
      }
      // queued and delivered for each: 2N events; the node that did not write an event's row finds it by polling the shared outbox.
      await waitFor(() => seen.size >= 2 * N || undefined, 20_000, `${2 * N} webhook events`).catch((e: Error) => {
        throw new Error(`${e.message}: got ${seen.size}`);
      });
      await new Promise((r) => setTimeout(r, 1500)); // time for a duplicate to show up, if there were one
      assert.equal(seen.size, 2 * N);
      assert.deepEqual([...seen.values()].filter((n) => n !== 1), [], 'no event delivered twice');
    } finally {
      receiver.close();
    }
  });
});
