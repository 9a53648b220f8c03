// The suppression list end to end (issue 13, item 7): a real Tern with an
// http listener, the loopback DNS server and a scripted remote MTA that is
// the MX of customers.test. The API manages the list (bad input refused by
// path); a 550 5.1.1 puts the recipient on it and later mail to it, by SMTP
// submission or the API, never reaches the peer and gets a 'suppressed'
// event (a DSN only for NOTIFY=FAILURE); a 550 5.7.1 does not; an ARF
// report (RFC 5965) from a verified reporter to abuse@ or fbl@ suppresses
// the complainer with a 'complained' event, one from an unverified reporter
// does not; DELETE lifts an entry and mail flows again.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.ts';
import { runApiKey } from '../../src/cli/apikey.ts';
import type { MessageEvent } from '../../src/events/events.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { ScriptedPeer, type PeerCommand } from '../helpers/scripted-peer.ts';
import { ALICE, mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, queuedAs } from './smtp-kit.ts';

const PEER = '127.0.0.2';
const mx = { MX: [{ preference: 10, exchange: 'mx.peer.test' }] };

/** An ARF report (RFC 5965 §2, §3) as a feedback loop sends it: text, message/feedback-report, the returned header section. */
function arfReport(o: { from: string; to: string; complainer: string; messageId?: string; marker: string }): string {
  const b = `fbl-${o.marker}`;
  return [
    `From: Feedback Loop <${o.from}>`,
    `To: <${o.to}>`,
    `Subject: ${o.marker}: complaint about a message from tern.test`,
    'Date: Mon, 1 Jan 2024 00:00:00 +0000',
    `Message-ID: <${o.marker}@report.test>`,
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=feedback-report; boundary="${b}"`,
    '',
    `--${b}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'This is an email abuse report for a message received from 127.0.0.1.',
    `--${b}`,
    'Content-Type: message/feedback-report',
    '',
    'Feedback-Type: abuse',
    'User-Agent: IspFbl/2.1',
    'Version: 1',
    'Original-Mail-From: <alice@tern.test>',
    `Original-Rcpt-To: <${o.complainer}>`,
    'Reporting-MTA: dns; mx.isp.test',
    'Source-IP: 127.0.0.1',
    '',
    `--${b}`,
    'Content-Type: text/rfc822-headers',
    '',
    'From: <alice@tern.test>',
    `To: <${o.complainer}>`,
    'Subject: hello',
    ...(o.messageId ? [`Message-ID: ${o.messageId}`] : []),
    '',
    `--${b}--`,
    '',
  ].join('\r\n');
}

describe('suppressions', () => {
  let dns: DnsServer;
  let peer: ScriptedPeer;
  let srv: TestServer;
  let base: string;
  let key: string;
  const events: MessageEvent[] = [];

  before(async () => {
    peer = await ScriptedPeer.start({
      host: PEER,
      on: (c: PeerCommand) => {
        if (c.verb !== 'RCPT') return undefined;
        if (c.arg.includes('<gone@customers.test>')) return '550 5.1.1 <gone@customers.test>: Recipient address rejected: User unknown';
        if (c.arg.includes('<blocked@customers.test>')) return '550 5.7.1 <blocked@customers.test>: Relay access denied';
        return undefined;
      },
    });
    dns = await startDnsServer({
      'customers.test': mx,
      'mx.peer.test': { A: [PEER] },
      'mail.isp.test': { A: ['127.0.0.1'] },
      // The feedback loop's domain passes SPF from the test client; the other one is neutral (not verified, not refused).
      'isp.test': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      'unverified.test': { TXT: ['v=spf1 ?all'] },
    });
    srv = await startServer(
      {
        listeners: [
          { role: 'smtp', address: '127.0.0.1', port: 0 },
          { role: 'submissions', address: '127.0.0.1', port: 0 },
          { role: 'http', address: '127.0.0.1', port: 0 },
        ],
        // abuse@ is an alias (the report is delivered and read); fbl@ has no mailbox (a sink: read and consumed).
        domains: [{ name: 'tern.test', mailboxes: ['alice', 'bob'], aliases: { abuse: 'alice', postmaster: 'alice' } }],
        dns: { servers: [dns.address], timeout: '2s' },
        inbound: { enabled: true },
        outbound: { port: peer.port, connectionReuse: '0s', timeouts: { connect: '2s', command: '5s', dataBlock: '5s', dataEnd: '5s' } },
        queue: { retrySchedule: ['1h'] },
      },
      { fsync: false },
    );
    srv.tern.events.subscribe((e) => void events.push(e));
    base = `http://127.0.0.1:${srv.port('http')}`;
    let out = '';
    assert.equal(runApiKey(loadConfig(path.join(srv.dir, 'tern.yaml')), ['create', 'shop', '--send-as', '@tern.test'], { write: (s: string) => (out += s) }, { write: () => true }), 0);
    key = out.trim();
  });

  after(async () => {
    await srv?.stop();
    await peer?.close();
    await dns?.close();
  });

  const api = (p: string, init: RequestInit & { key?: string | null } = {}) =>
    fetch(base + p, {
      ...init,
      headers: { ...(init.key === null ? {} : { authorization: `Bearer ${init.key ?? key}` }), ...(init.body ? { 'content-type': 'application/json' } : {}) },
    });
  const put = (address: string, body: unknown) => api(`/v1/suppressions/${address}`, { method: 'PUT', body: JSON.stringify(body) });

  async function expectProblem(res: Response, status: number, pointer?: string): Promise<void> {
    assert.equal(res.status, status);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const p = (await res.json()) as { status: number; errors?: { path: string }[] };
    assert.equal(p.status, status);
    if (pointer !== undefined) assert.ok(p.errors?.some((e) => e.path === pointer), `${pointer} in ${JSON.stringify(p.errors)}`);
  }

  /** RCPT TO commands the remote MTA received for `address`. */
  const rcptsAtPeer = (address: string) => peer.sessions.flatMap((s) => s.commands).filter((c) => c.toLowerCase().startsWith(`rcpt to:<${address}>`)).length;
  const eventOf = (id: string, type: string, recipient?: string) => () => events.find((e) => e.queueId === id && e.type === type && (recipient === undefined || e.recipient === recipient));

  /** One message over SMTP submission (port 465, AUTH PLAIN as alice); each RCPT may carry parameters. */
  async function submit(rcpts: string[], subject: string): Promise<string> {
    const c = await open(srv.port('submissions'), { tls: true });
    try {
      await expectCmd(c, `AUTH PLAIN ${Buffer.from(`\0${ALICE.user}\0${ALICE.password}`).toString('base64')}`, /^235 /);
      await expectCmd(c, 'MAIL FROM:<alice@tern.test>', /^250 /);
      for (const r of rcpts) await expectCmd(c, `RCPT TO:${r}`, /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(`From: alice@tern.test\r\nTo: customers\r\nSubject: ${subject}\r\n\r\nHello.\r\n.\r\n`);
      return queuedAs(await c.reply());
    } finally {
      c.close();
    }
  }

  /** One message on port 25 from outside (the test client, HELO mail.isp.test). */
  async function fromOutside(sender: string, rcpt: string, data: string): Promise<string> {
    const c = await open(srv.port('smtp'), { ehlo: 'mail.isp.test' });
    try {
      await expectCmd(c, `MAIL FROM:<${sender}>`, /^250 /);
      await expectCmd(c, `RCPT TO:<${rcpt}>`, /^250 /);
      await expectCmd(c, 'DATA', /^354 /);
      c.send(data + '.\r\n');
      return queuedAs(await c.reply(10_000));
    } finally {
      c.close();
    }
  }

  async function sendApi(to: string, subject: string): Promise<{ id: string; messageId: string; recipients: { address: string; status: string }[] }> {
    const res = await api('/v1/messages', { method: 'POST', body: JSON.stringify({ from: 'alice@tern.test', to: [to], subject, text: 'Hello.' }) });
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()) as { id: string; messageId: string; recipients: { address: string; status: string }[] };
  }

  it('the API: 401 without a key; PUT 201 then 200; GET one and pages; bad input is 400 naming its path; DELETE then 404', async () => {
    await expectProblem(await api('/v1/suppressions', { key: null }), 401);
    await expectProblem(await api('/v1/suppressions/a@customers.test', { key: 'tern_wrong' }), 401);
    await expectProblem(await api('/v1/suppressions/a@customers.test', { method: 'PUT', key: null, body: '{"reason":"x"}' }), 401);

    let res = await put('Someone@Customers.TEST', { reason: 'asked us to stop' });
    assert.equal(res.status, 201);
    const created = (await res.json()) as Record<string, unknown>;
    assert.deepEqual({ ...created, createdAt: typeof created.createdAt }, { address: 'someone@customers.test', reason: 'asked us to stop', source: 'api', detail: null, createdAt: 'string' });
    assert.equal(new Date(created.createdAt as string).toISOString(), created.createdAt);
    res = await put('someone%40customers.test', { reason: 'really' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { reason: string }).reason, 'really');
    res = await api('/v1/suppressions/SOMEONE@customers.test');
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { reason: string }).reason, 'really');

    assert.equal((await put('other@customers.test', { reason: 'x' })).status, 201);
    const page1 = (await (await api('/v1/suppressions?limit=1')).json()) as { suppressions: { address: string }[]; next: string };
    assert.deepEqual(page1.suppressions.map((s) => s.address), ['other@customers.test']);
    assert.equal(page1.next, 'other@customers.test');
    const page2 = (await (await api(`/v1/suppressions?limit=1&after=${page1.next}`)).json()) as { suppressions: { address: string }[]; next: string };
    assert.deepEqual(page2.suppressions.map((s) => s.address), ['someone@customers.test']);
    const last = (await (await api(`/v1/suppressions?after=${page2.next}`)).json()) as { suppressions: unknown[]; next: string };
    assert.deepEqual(last, { suppressions: [], next: 'someone@customers.test' }, 'the last page keeps the cursor');

    await expectProblem(await put('not-an-address', { reason: 'x' }), 400, '/params/address');
    await expectProblem(await api('/v1/suppressions/a@b@customers.test'), 400, '/params/address');
    await expectProblem(await api('/v1/suppressions/x@-bad-.test', { method: 'DELETE' }), 400, '/params/address');
    await expectProblem(await put('a@customers.test', { reason: 'x', reasn: 'typo' }), 400, '/body/reasn');
    await expectProblem(await put('a@customers.test', {}), 400, '/body/reason');
    await expectProblem(await put('a@customers.test', { reason: 42 }), 400, '/body/reason');
    await expectProblem(await put('a@customers.test', { reason: 'line\r\nbreak' }), 400, '/body/reason');
    await expectProblem(await api('/v1/suppressions?limit=0'), 400, '/query/limit');
    await expectProblem(await api('/v1/suppressions?colour=red'), 400, '/query/colour');
    assert.equal((await api('/v1/suppressions/a@customers.test')).status, 404, 'nothing was added by the refused PUTs');

    res = await api('/v1/suppressions/other@customers.test', { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { address: string }).address, 'other@customers.test');
    await expectProblem(await api('/v1/suppressions/other@customers.test', { method: 'DELETE' }), 404);
    await expectProblem(await api('/v1/suppressions/other@customers.test'), 404);
    // The API's own entry stops mail at once.
    const id = await submit(['<someone@customers.test>'], 'to a suppressed address');
    await waitFor(eventOf(id, 'suppressed'), 10_000, 'the suppressed event');
    assert.equal(rcptsAtPeer('someone@customers.test'), 0);
    assert.equal((await api('/v1/suppressions/someone@customers.test', { method: 'DELETE' })).status, 200);
  });

  it('a 550 5.1.1 suppresses the recipient; later mail to it by submission or the API never reaches the peer and gets a suppressed event', async () => {
    const first = await submit(['<gone@customers.test>'], 'first');
    await waitFor(eventOf(first, 'bounced'), 10_000, 'the bounce');
    assert.equal(rcptsAtPeer('gone@customers.test'), 1);
    const entry = (await (await api('/v1/suppressions/gone@customers.test')).json()) as { source: string; reason: string; detail: string };
    assert.equal(entry.source, 'bounce');
    assert.equal(entry.reason, 'hard-bounce');
    assert.match(entry.detail, /^550 5\.1\.1 <gone@customers\.test>: Recipient address rejected: User unknown \(from mx\.peer\.test\)$/);

    // Submission, with NOTIFY=FAILURE for the suppressed one and another recipient in the same message.
    const second = await submit(['<gone@customers.test> NOTIFY=FAILURE', '<fine@customers.test>'], 'second');
    const suppressed = (await waitFor(eventOf(second, 'suppressed', 'gone@customers.test'), 10_000, 'the suppressed event'))!;
    assert.deepEqual(suppressed.data.reply, { code: 550, enhanced: '5.7.1', text: 'Recipient is on the suppression list (hard-bounce)' });
    assert.equal(suppressed.data.source, 'submission');
    await waitFor(eventOf(second, 'delivered', 'fine@customers.test'), 10_000, 'the other recipient delivered');
    assert.ok(!events.some((e) => e.queueId === second && e.type === 'bounced'), 'suppressed, not bounced');
    // The DSN the sender asked for, with our reply.
    const dsnAbout = (subject: string) => mailbox(srv.dataDir, 'tern.test', 'alice').filter((f) => {
      const text = fs.readFileSync(f, 'latin1');
      return text.includes('Recipient is on the suppression list') && text.includes(`Subject: ${subject}`);
    });
    await waitFor(() => dsnAbout('second').length === 1, 10_000, 'the DSN for NOTIFY=FAILURE');

    // Without NOTIFY: no DSN.
    const third = await submit(['<gone@customers.test>'], 'third');
    await waitFor(eventOf(third, 'suppressed'), 10_000, 'the suppressed event');
    await waitFor(() => !srv.tern.scheduler.get(third), 10_000, 'the message to leave the queue');
    await srv.tern.scheduler.idle();
    assert.deepEqual(dsnAbout('third'), []);

    // The API.
    const sent = await sendApi('gone@customers.test', 'via the API');
    assert.deepEqual(sent.recipients, [{ address: 'gone@customers.test', status: 'suppressed' }], 'the 202 says so at once');
    await waitFor(eventOf(sent.id, 'suppressed', 'gone@customers.test'), 10_000, 'the suppressed event of API mail');
    const view = (await (await api(`/v1/messages/${sent.id}`)).json()) as { recipients: { address: string; status: string; lastReply: { enhanced: string } }[] };
    assert.deepEqual(view.recipients.map((r) => [r.address, r.status, r.lastReply.enhanced]), [['gone@customers.test', 'suppressed', '5.7.1']]);
    assert.equal(rcptsAtPeer('gone@customers.test'), 1, 'the peer saw only the first attempt');
  });

  it('a 550 5.7.1 refusal by policy does not suppress', async () => {
    const id = await submit(['<blocked@customers.test>'], 'policy');
    await waitFor(eventOf(id, 'bounced'), 10_000, 'the bounce');
    await expectProblem(await api('/v1/suppressions/blocked@customers.test'), 404);
  });

  it('ARF reports: a verified reporter\'s suppresses the complainer with a complained event; an unverified one\'s does not', async () => {
    // Mail we send: one by the API (its Message-ID is on record), one by submission.
    const sent = await sendApi('reader@customers.test', 'newsletter');
    await waitFor(async () => ((await (await api(`/v1/messages/${sent.id}`)).json()) as { recipients: { status: string }[] }).recipients[0]?.status === 'delivered', 10_000, 'the API message delivered');
    const smtp = await submit(['<fine2@customers.test>'], 'receipt');
    await waitFor(eventOf(smtp, 'delivered'), 10_000, 'the submission delivered');
    await waitFor(async () => (await api(`/v1/messages/${smtp}`)).status === 200, 10_000, 'its events stored');

    // A report to the sink fbl@ (no mailbox) from the verified feedback loop: consumed, and the complaint counts.
    const report1 = await fromOutside('fbl@isp.test', 'fbl@tern.test', arfReport({ from: 'fbl@isp.test', to: 'fbl@tern.test', complainer: 'reader@customers.test', messageId: sent.messageId, marker: 'R1' }));
    const complained = (await waitFor(() => events.find((e) => e.type === 'complained' && e.recipient === 'reader@customers.test'), 10_000, 'the complained event'))!;
    assert.equal(complained.queueId, sent.id, 'on the original message, found by its Message-ID');
    assert.equal(complained.data.source, 'api');
    const entry = (await (await api('/v1/suppressions/reader@customers.test')).json()) as { source: string; reason: string; detail: string };
    assert.equal(entry.source, 'complaint');
    assert.equal(entry.reason, 'complaint');
    assert.match(entry.detail, new RegExp(`^Feedback-Type: abuse; reported by isp\\.test \\(spf=pass\\) \\(IspFbl/2\\.1\\); report ${report1}$`));
    const consumed = (await waitFor(eventOf(report1, 'delivered'), 10_000, 'the report consumed'))!;
    assert.equal(consumed.data.reply?.text, 'feedback report read');
    assert.ok(!fs.existsSync(path.join(srv.dataDir, 'mailboxes', 'tern.test', 'fbl')), 'no Maildir for the sink');

    // The same complaint about fine2@ from a reporter whose SPF is only neutral: read, not believed.
    const forged = await fromOutside('fbl@unverified.test', 'fbl@tern.test', arfReport({ from: 'fbl@unverified.test', to: 'fbl@tern.test', complainer: 'fine2@customers.test', marker: 'R2' }));
    await waitFor(eventOf(forged, 'delivered'), 10_000, 'the unverified report consumed');
    await expectProblem(await api('/v1/suppressions/fine2@customers.test'), 404);
    assert.ok(!events.some((e) => e.type === 'complained' && e.recipient === 'fine2@customers.test'));

    // From the verified reporter to abuse@ (an alias of alice): delivered to her and read; SMTP mail has no Message-ID on record, so the event goes with the report.
    const report3 = await fromOutside('fbl@isp.test', 'abuse@tern.test', arfReport({ from: 'fbl@isp.test', to: 'abuse@tern.test', complainer: 'fine2@customers.test', marker: 'R3' }));
    const ev = (await waitFor(() => events.find((e) => e.type === 'complained' && e.recipient === 'fine2@customers.test'), 10_000, 'the second complained event'))!;
    assert.equal(ev.queueId, report3);
    await waitFor(eventOf(report3, 'delivered', 'alice@tern.test'), 10_000, 'the report in alice\'s mailbox');
    assert.ok(mailbox(srv.dataDir, 'tern.test', 'alice').some((f) => fs.readFileSync(f, 'latin1').includes('Subject: R3: complaint')));
    assert.equal((await api('/v1/suppressions/fine2@customers.test')).status, 200);

    // Mail to the complainer now stops before the peer.
    const before = rcptsAtPeer('reader@customers.test');
    const later = await submit(['<reader@customers.test>'], 'after the complaint');
    await waitFor(eventOf(later, 'suppressed'), 10_000, 'the suppressed event');
    assert.equal(rcptsAtPeer('reader@customers.test'), before);
  });

  it('DELETE lifts a suppression: mail flows again', async () => {
    const res = await api('/v1/suppressions/reader@customers.test', { method: 'DELETE' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { source: string }).source, 'complaint');
    const before = rcptsAtPeer('reader@customers.test');
    const sent = await sendApi('reader@customers.test', 'welcome back');
    await waitFor(eventOf(sent.id, 'delivered', 'reader@customers.test'), 10_000, 'delivery after the lift');
    assert.equal(rcptsAtPeer('reader@customers.test'), before + 1);
  });
});
