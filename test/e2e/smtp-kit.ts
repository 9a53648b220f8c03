// Small helpers shared by the SMTP end-to-end tests (smtp-session, smuggling,
// relay, limits, starttls). Everything here talks to a real Tern over real
// sockets; see test/helpers/server.ts for the harness itself.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { RawClient, mailbox, waitFor } from '../helpers/server.ts';
import { readJournal } from '../../src/spool/journal.ts';
import type { Envelope } from '../../src/spool/types.ts';

export type Role = 'smtp' | 'submission' | 'submissions';

/** Connect, check the 220 greeting and (unless `ehlo` is false) say EHLO. */
export async function open(port: number, opts: { ehlo?: string | false; localAddress?: string; tls?: boolean } = {}): Promise<RawClient> {
  let c: RawClient;
  if (opts.tls) c = await RawClient.connectTls(port);
  else if (opts.localAddress) c = await connectFrom(port, opts.localAddress);
  else c = await RawClient.connect(port);
  // Small writes go out at once (no Nagle delay between split pieces).
  c.socket.setNoDelay(true);
  assert.match(await c.reply(), /^220 mx\.tern\.test ESMTP/);
  const ehlo = opts.ehlo ?? 'client.test';
  if (ehlo !== false) assert.match(await c.cmd(`EHLO ${ehlo}`), /^250 /m);
  return c;
}

/** A RawClient whose socket is bound to a chosen loopback source address (127.0.0.0/8 all reaches lo). */
export function connectFrom(port: number, localAddress: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(new RawClient(s)));
    s.once('error', reject);
  });
}

/** Send one command line and assert its (possibly multi-line) reply matches every pattern. */
export async function expectCmd(c: RawClient, line: string, ...patterns: RegExp[]): Promise<string> {
  const r = await c.cmd(line);
  for (const p of patterns) assert.match(r, p, `reply to ${JSON.stringify(line)}`);
  return r;
}

/** Read the next replies and assert them one pattern each, in order. */
export async function expectReplies(c: RawClient, ...patterns: RegExp[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of patterns) {
    const r = await c.reply();
    assert.match(r, p, `reply ${out.length + 1} of ${patterns.length} (earlier: ${JSON.stringify(out)})`);
    out.push(r);
  }
  return out;
}

/** Nothing more arrives within `ms` (used to prove a command got no reply). */
export async function expectSilence(c: RawClient, ms = 150): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  assert.equal(c.pending, '', 'unexpected extra reply');
}

/** The queue id in "250 2.0.0 OK queued as <ID>". */
export function queuedAs(reply: string): string {
  const m = /^250 2\.0\.0 .*queued as (\S+)/.exec(reply);
  assert.ok(m, `expected "queued as <id>", got ${JSON.stringify(reply)}`);
  return m[1]!;
}

/** A whole transaction with DATA; `body` is sent as given (already dot-stuffed, CRLF line ends) and must end with CRLF. */
export async function sendMail(c: RawClient, from: string, to: string[], body: string): Promise<string> {
  await expectCmd(c, `MAIL FROM:<${from}>`, /^250 2\.1\.0/);
  for (const r of to) await expectCmd(c, `RCPT TO:<${r}>`, /^250 2\.1\.5/);
  await expectCmd(c, 'DATA', /^354 /);
  c.send(body + '.\r\n');
  return queuedAs(await c.reply());
}

export function queueDir(dataDir: string): string {
  return path.join(dataDir, 'spool', 'queue');
}

/** Ids of queued messages: queue files (large messages) and journal records not yet done (small ones). */
export function queuedIds(dataDir: string): string[] {
  let files: string[] = [];
  try {
    files = fs.readdirSync(queueDir(dataDir));
  } catch {
    /* no spool yet */
  }
  return [...files, ...readJournal(path.join(dataDir, 'spool', 'journal')).map((r) => r.id)];
}

/**
 * The envelope of a queued message as stored on disk: from the journal, or
 * from a queue file's trailer "\nTERN2 <message length> <JSON length>\n".
 */
export function readEnvelope(dataDir: string, id: string): Envelope {
  const record = readJournal(path.join(dataDir, 'spool', 'journal')).find((r) => r.id === id);
  if (record) return JSON.parse(record.envelopeJson.toString('utf8')) as Envelope;
  const data = fs.readFileSync(path.join(queueDir(dataDir), id));
  const text = data.toString('latin1');
  const at = text.lastIndexOf('\nTERN2 ');
  const m = /^TERN2 (\d+) (\d+)\n$/.exec(text.slice(at + 1));
  assert.ok(m, 'queue file trailer');
  const body = Number(m[1]);
  return JSON.parse(data.subarray(body, body + Number(m[2])).toString('utf8')) as Envelope;
}

/** Wait until local delivery has finished with everything (the queue directory is empty). */
export async function waitQueueEmpty(dataDir: string): Promise<void> {
  await waitFor(() => queuedIds(dataDir).length === 0, 10_000, 'queue to drain');
}

/** Contents of every file in a mailbox's new/. */
export function mailboxContents(dataDir: string, domain: string, user: string): string[] {
  return mailbox(dataDir, domain, user).map((f) => fs.readFileSync(f, 'latin1'));
}

/** Wait for exactly `n` files in a mailbox, after the queue has drained (so no late extra copies). */
export async function expectMailbox(dataDir: string, domain: string, user: string, n: number): Promise<string[]> {
  await waitQueueEmpty(dataDir);
  const got = mailboxContents(dataDir, domain, user);
  assert.equal(got.length, n, `${user}@${domain} should have ${n} message(s)`);
  return got;
}
