import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { EventStream, type MessageEvent } from '../events/events.ts';
import type { DeliveryJob, DeliveryResult } from '../delivery/types.ts';
import { Directory } from '../policy/directory.ts';
import type { Envelope, QueuedMessage, Recipient } from '../spool/types.ts';
import { openStore } from '../store/store.ts';
import { silentLogger } from '../util/log.ts';
import { ok, perRecipient } from '../../test/helpers/transports.ts';
import { ComplaintReader, reporterTrust } from './complaints.ts';
import { SuppressionList } from './list.ts';

const VERIFIED = { verified: 'spf' as const, domain: 'isp.test', detail: 'spf=pass isp.test' };

/** An ARF report (RFC 5965 §2) about one message, to one recipient. */
function arf(opts: { type?: string; rcpt?: string; messageId?: string; to?: string }): Buffer {
  const b = 'arf-boundary';
  return Buffer.from(
    [
      'From: <fbl@isp.test>',
      'Subject: complaint',
      `Content-Type: multipart/report; report-type=feedback-report; boundary="${b}"`,
      '',
      `--${b}`,
      'Content-Type: text/plain',
      '',
      'A complaint.',
      `--${b}`,
      'Content-Type: message/feedback-report',
      '',
      `Feedback-Type: ${opts.type ?? 'abuse'}`,
      'User-Agent: IspFbl/1.0',
      'Version: 1',
      ...(opts.rcpt ? [`Original-Rcpt-To: <${opts.rcpt}>`] : []),
      '',
      `--${b}`,
      'Content-Type: text/rfc822-headers',
      '',
      'From: <shop@tern.test>',
      `To: <${opts.to ?? opts.rcpt ?? 'someone@customers.test'}>`,
      ...(opts.messageId ? [`Message-ID: ${opts.messageId}`] : []),
      '',
      `--${b}--`,
      '',
    ].join('\r\n'),
  );
}

function setup(addresses: string[] = []) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-complaints-'));
  const store = openStore(dir);
  const list = new SuppressionList(store.suppressions, { log: silentLogger });
  const events = new EventStream();
  const seen: MessageEvent[] = [];
  events.subscribe((e) => void seen.push(e));
  const directory = new Directory([{ name: 'tern.test', mailboxes: ['alice'], aliases: { abuse: ['alice'] } }]);
  const reader = new ComplaintReader({ list, events, store, directory, addresses, log: silentLogger });
  directory.setSinks(reader.isSink);
  const delivered: string[] = [];
  const inner = perRecipient('maildir', (job, i) => (delivered.push(job.msg.envelope.recipients[i]!.address), ok()));
  const transport = reader.wrap(inner);

  // What the events store knows: an API message with its Message-ID, delivered to reader@, and an SMTP message delivered to seen@.
  const data = (source: 'api' | 'smtp') => ({ attempt: 1, relay: null, tls: null, reply: null, bounceClass: null, source, tags: source === 'api' ? { campaign: 'spring' } : null, transport: 'mx' });
  store.addEvents([
    { sender: 'shop@tern.test', messageId: '<api-1@mx.tern.test>', event: { id: '0001', type: 'queued', timestamp: new Date().toISOString(), queueId: 'QAPI', recipient: 'reader@customers.test', data: data('api') } },
    { sender: 'shop@tern.test', event: { id: '0002', type: 'delivered', timestamp: new Date().toISOString(), queueId: 'QAPI', recipient: 'reader@customers.test', data: data('api') } },
    { sender: 'shop@tern.test', event: { id: '0003', type: 'delivered', timestamp: new Date().toISOString(), queueId: 'QSMTP', recipient: 'seen@customers.test', data: data('smtp') } },
  ]);

  let n = 0;
  /** Delivers `body` to the given RCPTs (as the directory resolves them) and returns the results. */
  async function deliver(rcpts: string[], body: Buffer, env: Partial<Envelope> = { outside: VERIFIED }, open?: () => Readable): Promise<{ results: DeliveryResult[]; id: string; opened: number }> {
    const recipients: Recipient[] = rcpts.flatMap((r) => {
      const [local, domain] = r.split('@') as [string, string];
      return directory.resolve(local, domain)!.map((t) => ({ address: t.address, original: r, mailbox: t.kind === 'local' ? { domain: t.domain, localPart: t.localPart } : undefined }));
    });
    const id = `QREPORT${++n}`;
    const msg: QueuedMessage = {
      envelope: { id, sender: 'fbl@isp.test', recipients, receivedAt: Date.now(), smtputf8: false, client: { ip: '192.0.2.9', role: 'smtp' }, ...env },
      state: { attempts: 0, nextAttempt: 0, status: recipients.map(() => 'pending'), lastReply: recipients.map(() => null) },
      bodyLength: body.length,
      size: body.length,
      recovered: false,
    };
    let opened = 0;
    const job: DeliveryJob = { msg, indices: recipients.map((_, i) => i), open: () => (opened++, open ? open() : Readable.from([body])) };
    return { results: await transport.deliver(job), id, opened };
  }
  return { store, list, events: seen, delivered, deliver, directory, reader, cleanup: () => (store.close(), fs.rmSync(dir, { recursive: true, force: true })) };
}

test('complaint addresses: abuse@ and fbl@ of local domains by default, +tags included; an explicit list replaces them', () => {
  const t = setup();
  const own = setup(['reports@tern.test']);
  try {
    assert.equal(t.reader.isComplaintAddress('Abuse@Tern.test'), true);
    assert.equal(t.reader.isComplaintAddress('fbl+yahoo@tern.test'), true);
    assert.equal(t.reader.isComplaintAddress('abuse@remote.test'), false);
    assert.equal(t.reader.isComplaintAddress('alice@tern.test'), false);
    assert.equal(own.reader.isComplaintAddress('abuse@tern.test'), false);
    assert.equal(own.reader.isComplaintAddress('REPORTS@tern.test'), true);
  } finally {
    t.cleanup();
    own.cleanup();
  }
});

test('the directory: a complaint address nobody has is a sink; one that is an alias stays the alias; others still do not exist', () => {
  const t = setup();
  try {
    const addrs = (l: string) => t.directory.resolve(l, 'tern.test')?.map((x) => `${x.kind}:${x.address}`) ?? null;
    assert.deepEqual(addrs('fbl'), ['local:fbl@tern.test']);
    assert.deepEqual(addrs('FBL+aol'), ['local:fbl@tern.test']);
    assert.deepEqual(addrs('abuse'), ['local:alice@tern.test']);
    assert.equal(addrs('nobody'), null);
    assert.equal(t.directory.isSinkOnly('fbl', 'tern.test'), true);
    assert.equal(t.directory.isSinkOnly('abuse', 'tern.test'), false);
    assert.equal(t.directory.isSinkOnly('alice', 'tern.test'), false);
    assert.equal(new Directory([{ name: 'tern.test', mailboxes: [], aliases: {} }]).resolve('fbl', 'tern.test'), null, 'no sinks unless set');
  } finally {
    t.cleanup();
  }
});

test('a verified report to a sink about API mail: consumed (250), the complainer suppressed, complained on the original message', async () => {
  const t = setup();
  try {
    const { results } = await t.deliver(['fbl@tern.test'], arf({ rcpt: 'Reader@customers.test', messageId: '<api-1@mx.tern.test>' }));
    assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.reply.text]), [['ok', 250, 'feedback report read']]);
    assert.deepEqual(t.delivered, [], 'nothing delivered to a mailbox');
    const entry = t.list.get('reader@customers.test')!;
    assert.equal(entry.source, 'complaint');
    assert.equal(entry.reason, 'complaint');
    assert.match(entry.detail!, /^Feedback-Type: abuse; reported by isp\.test \(spf=pass\) \(IspFbl\/1\.0\); report QREPORT1$/);
    const [ev] = t.events.filter((e) => e.type === 'complained');
    assert.ok(ev);
    assert.equal(ev.queueId, 'QAPI');
    assert.equal(ev.recipient, 'reader@customers.test');
    assert.equal(ev.data.source, 'api');
    assert.deepEqual(ev.data.tags, { campaign: 'spring' });
  } finally {
    t.cleanup();
  }
});

test('a report to a complaint address that has a mailbox is delivered there too, and read', async () => {
  const t = setup();
  try {
    const { results } = await t.deliver(['abuse@tern.test'], arf({ rcpt: 'seen@customers.test', messageId: '<unknown@elsewhere.test>' }));
    assert.deepEqual(results.map((r) => r.status), ['ok']);
    assert.deepEqual(t.delivered, ['alice@tern.test']);
    assert.ok(t.list.lookup('seen@customers.test'));
    // Not an API message: the event goes with the report itself.
    const ev = t.events.find((e) => e.type === 'complained')!;
    assert.equal(ev.queueId, 'QREPORT1');
    assert.equal(ev.recipient, 'seen@customers.test');
    assert.equal(ev.data.source, 'smtp');
  } finally {
    t.cleanup();
  }
});

test('reports are not believed from an unverified reporter, about addresses we never mailed, or when they are no complaint', async () => {
  const t = setup();
  try {
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'reader@customers.test' }), { outside: { verified: null, detail: 'spf=fail, no aligned dkim pass' } });
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'stranger@customers.test' }));
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'seen@customers.test', type: 'not-spam' }));
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'seen@customers.test', type: 'auth-failure' }));
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'alice@tern.test' }));
    // The API's Message-ID, but the complainer was not among its recipients.
    await t.deliver(['fbl@tern.test'], arf({ rcpt: 'stranger@customers.test', messageId: '<api-1@mx.tern.test>' }));
    assert.equal(t.list.page('', 10).length, 0);
    assert.deepEqual(t.events.filter((e) => e.type === 'complained'), []);
  } finally {
    t.cleanup();
  }
});

test('inside mail (authenticated, trusted network) is believed; a redacted recipient falls back to a single To:', async () => {
  const t = setup();
  try {
    await t.deliver(['fbl@tern.test'], arf({ to: 'seen@customers.test' }), { outside: undefined });
    assert.equal(t.list.lookup('seen@customers.test')?.source, 'complaint');
    assert.deepEqual(reporterTrust({ id: 'x', sender: 'a@b.test', recipients: [], receivedAt: 0, smtputf8: false }), { trusted: true, by: '<a@b.test> (our own user or network)' });
  } finally {
    t.cleanup();
  }
});

test('a retry of the same delivery complains once', async () => {
  const t = setup();
  try {
    const body = arf({ rcpt: 'seen@customers.test' });
    const first = await t.deliver(['fbl@tern.test'], body);
    // The same message again (a second round), by its id.
    const again = await t.deliver(['fbl@tern.test'], body, { outside: VERIFIED, id: first.id });
    assert.deepEqual(again.results.map((r) => r.status), ['ok']);
    assert.equal(again.opened, 1, 'read again (it may be a mailbox delivery too)');
    assert.equal(t.events.filter((e) => e.type === 'complained').length, 1);
  } finally {
    t.cleanup();
  }
});

test('what is not a report: a sink bounces it (550 5.1.1), a mailbox gets it', async () => {
  const t = setup();
  try {
    const plain = Buffer.from('From: a@b.test\r\nSubject: you spammed me\r\n\r\nStop it.\r\n');
    const { results } = await t.deliver(['fbl@tern.test', 'abuse@tern.test'], plain);
    assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.reply.enhanced]), [['permfail', 550, '5.1.1'], ['ok', 250, '2.0.0']]);
    assert.match(results[0]!.reply.text, /only feedback reports \(RFC 5965\)/);
    assert.deepEqual(t.delivered, ['alice@tern.test']);
  } finally {
    t.cleanup();
  }
});

test('other mail passes straight through, unread; an unreadable report defers the sink and still delivers the mailbox', async () => {
  const t = setup();
  try {
    const normal = await t.deliver(['alice@tern.test'], arf({ rcpt: 'seen@customers.test' }));
    assert.equal(normal.opened, 0, 'not read by the complaint reader');
    assert.deepEqual(t.delivered, ['alice@tern.test']);
    assert.equal(t.list.lookup('seen@customers.test'), null);

    const broken = () => new Readable({ read() { this.destroy(new Error('EIO')); } });
    const { results } = await t.deliver(['fbl@tern.test', 'abuse@tern.test'], Buffer.alloc(0), { outside: VERIFIED }, broken);
    assert.deepEqual(results.map((r) => [r.status, r.reply.code]), [['tempfail', 451], ['ok', 250]]);
    assert.match(results[0]!.reply.text, /EIO/);
  } finally {
    t.cleanup();
  }
});
