// Tern as a safe MX, end to end: a real Tern with the test DNS server.
// Every message from outside on the smtp listener gets one
// Authentication-Results field under our authserv-id, with SPF (MAIL FROM
// and HELO), DKIM (rsa and ed25519; signed by our signer and by Debian's
// independent dkimsign), ARC, DMARC and iprev; forged fields claiming our
// id are removed; the inbound policy rejects (DMARC p=reject, SPF fail where
// configured), quarantines into Junk (p=quarantine, pct), or only marks;
// trusted forwarders are exempt.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { open, expectCmd } from './smtp-kit.ts';
import { DkimSigner, dnsRecordFor, type DkimKey } from '../../src/intake/dkim.ts';
import { reverseName } from '../../src/policy/iprev.ts';
import { MAX_VERIFIED_HEADER } from '../../src/intake/intake.ts';
import type { RawClient } from '../helpers/server.ts';
import { requireFile } from '../helpers/tools.ts';

const { sealMessage } = createRequire(import.meta.url)('mailauth') as {
  sealMessage(input: Buffer, seal: { signingDomain: string; selector: string; privateKey: string; authResults: string; cv: string }): Promise<Buffer>;
};

/** Debian's python3-dkim belongs to the system Python, not to a python3 earlier on PATH (pyenv). */
const DKIMSIGN = '/usr/bin/dkimsign';
const NEEDS_DKIMSIGN = requireFile(DKIMSIGN, 'python3-dkim');
const HELO = 'mail.sender.test';
const FORWARDER = '127.0.0.2';
const TRUSTED = '127.0.0.3';

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const ed = crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const key = (domain: string, selector: string, privateKey = rsa): DkimKey =>
  ({ domain, selector, privateKey, algorithm: privateKey === rsa ? 'rsa-sha256' : 'ed25519-sha256' });
const RSA_KEY = key('dk.test', 'rsa');
const ED_KEY = key('dk.test', 'ed', ed);

const spf = (record: string) => ({ TXT: [record] });
const dmarc = (record: string) => ({ TXT: [record] });

const ZONE: Zone = {
  [HELO]: { A: ['127.0.0.1'], TXT: ['v=spf1 a -all'] },
  [reverseName('127.0.0.1')]: { PTR: [HELO] },
  // SPF, one domain per result.
  'pass.test': spf('v=spf1 ip4:127.0.0.1 -all'),
  'fail.test': spf('v=spf1 -all'),
  'softfail.test': spf('v=spf1 ~all'),
  'neutral.test': spf('v=spf1 ?all'),
  'none.test': { A: ['192.0.2.1'] },
  'temp.test': { SERVFAIL: true },
  'perm.test': spf('v=spf1 ip4:127.0.0.1 frobnicate -all'),
  // DKIM.
  'rsa._domainkey.dk.test': { TXT: [dnsRecordFor(RSA_KEY)] },
  'ed._domainkey.dk.test': { TXT: [dnsRecordFor(ED_KEY)] },
  'revoked._domainkey.dk.test': { TXT: ['v=DKIM1; k=rsa; p='] },
  'dk.test': spf('v=spf1 -all'),
  '_dmarc.dk.test': dmarc('v=DMARC1; p=reject'),
  // DMARC policies (SPF fails for all of them, nothing is signed).
  'dm-reject.test': spf('v=spf1 -all'),
  '_dmarc.dm-reject.test': dmarc('v=DMARC1; p=reject'),
  'dm-quar.test': spf('v=spf1 -all'),
  '_dmarc.dm-quar.test': dmarc('v=DMARC1; p=quarantine'),
  'dm-none.test': spf('v=spf1 -all'),
  '_dmarc.dm-none.test': dmarc('v=DMARC1; p=none'),
  'dm-pct.test': spf('v=spf1 -all'),
  '_dmarc.dm-pct.test': dmarc('v=DMARC1; p=reject; pct=0'),
  'sp.test': spf('v=spf1 -all'),
  '_dmarc.sp.test': dmarc('v=DMARC1; p=none; sp=reject'),
  'sub.sp.test': spf('v=spf1 -all'),
  // Alignment: the MAIL FROM (or DKIM d=) is a subdomain of the From domain.
  'align.test': { A: ['192.0.2.1'] },
  '_dmarc.align.test': dmarc('v=DMARC1; p=reject'),
  'bounce.align.test': spf('v=spf1 ip4:127.0.0.1 -all'),
  'rsa._domainkey.mail.align.test': { TXT: [dnsRecordFor(key('mail.align.test', 'rsa'))] },
  'strict.test': { A: ['192.0.2.1'] },
  '_dmarc.strict.test': dmarc('v=DMARC1; p=reject; aspf=s; adkim=s'),
  'bounce.strict.test': spf('v=spf1 ip4:127.0.0.1 -all'),
  'rsa._domainkey.strict.test': { TXT: [dnsRecordFor(key('strict.test', 'rsa'))] },
  'rsa._domainkey.mail.strict.test': { TXT: [dnsRecordFor(key('mail.strict.test', 'rsa'))] },
  // ARC.
  'arc._domainkey.arc.test': { TXT: [dnsRecordFor(key('arc.test', 'arc'))] },
  'slow.test': { TIMEOUT: true },
};

let n = 0;
/** A message with a unique Message-ID (so its delivered copy can be found), CRLF line ends. */
function message(from: string, extra: string[] = [], body = 'Hello.\r\n'): { id: string; text: string } {
  const id = `<t${++n}.${Date.now()}@client.test>`;
  const text = [`From: ${from}`, 'To: alice@tern.test', `Subject: inbound test ${n}`, `Message-ID: ${id}`, 'Date: Mon, 1 Jan 2024 00:00:00 +0000', ...extra].join('\r\n') + '\r\n\r\n' + body;
  return { id, text };
}

async function sign(text: string, keys: DkimKey[]): Promise<string> {
  const signer = new DkimSigner(keys);
  signer.write(Buffer.from(text));
  const fields = await signer.finish();
  assert.deepEqual(signer.errors, []);
  assert.ok(fields.length > 0);
  return fields + text;
}

/** One transaction; returns the reply to the end of data (or the refusal before it). */
async function send(port: number, opts: { from: string; to?: string[]; data: string; localAddress?: string; helo?: string }): Promise<string> {
  const c: RawClient = await open(port, { ehlo: opts.helo ?? HELO, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
  try {
    await expectCmd(c, `MAIL FROM:<${opts.from}>`, /^250 /);
    for (const r of opts.to ?? ['alice@tern.test']) await expectCmd(c, `RCPT TO:<${r}>`, /^250 /);
    await expectCmd(c, 'DATA', /^354 /);
    c.send(opts.data.replace(/^\./gm, '..') + '.\r\n');
    return await c.reply(15_000);
  } finally {
    c.close();
  }
}

/** The delivered copy of the message with this Message-ID, from new/ of the folder. */
async function delivered(srv: TestServer, id: string, where: { domain?: string; user?: string; folder?: string } = {}): Promise<string> {
  const dir = where.folder ? path.join(`.${where.folder}`, 'new') : 'new';
  const text = await waitFor(() => {
    for (const f of mailbox(srv.dataDir, where.domain ?? 'tern.test', where.user ?? 'alice', dir)) {
      const text = fs.readFileSync(f, 'latin1');
      if (text.includes(`Message-ID: ${id}`)) return text;
    }
    return undefined;
  }, 10_000, `delivery of ${id}${where.folder ? ` to ${where.folder}` : ''}`);
  return text!;
}

/** Unfolded header fields of a delivered message, in order. */
function fields(text: string): string[] {
  const header = text.slice(0, text.indexOf('\r\n\r\n') + 2);
  return header.replace(/\r\n[ \t]+/g, ' ').split('\r\n').filter((l) => l !== '');
}

/** Our Authentication-Results field: asserts there is exactly one and that it is the first field we added. */
function ours(text: string): string {
  const all = fields(text);
  const ar = all.filter((f) => /^Authentication-Results:\s*mx\.tern\.test\s*;/i.test(f));
  assert.equal(ar.length, 1, `exactly one Authentication-Results of ours in:\n${all.join('\n')}`);
  // Return-Path and Delivered-To come from local delivery; ours is right after them, above our Received.
  assert.match(all[2]!, /^Authentication-Results: mx\.tern\.test;/);
  assert.match(all[3]!, /^Received: from /);
  return ar[0]!;
}

describe('inbound checks (SPF, DKIM, DMARC, ARC, iprev) and policy', () => {
  let dns: DnsServer;
  let srv: TestServer;
  let port: number;

  before(async () => {
    dns = await startDnsServer(ZONE);
    srv = await startServer({
      dns: { servers: [dns.address], timeout: '500ms' },
      trustedNetworks: [TRUSTED],
      inbound: {
        enabled: true,
        trustedForwarders: [FORWARDER],
        domains: { 'catch.test': { spf: { onFail: 'reject' } } },
      },
    });
    port = srv.port('smtp');
  });
  after(async () => {
    await srv?.stop();
    await dns?.close();
  });

  it('records SPF for MAIL FROM (every result) and HELO, and iprev (FCrDNS)', async () => {
    const cases: [string, string][] = [
      ['pass.test', 'pass'], ['fail.test', 'fail'], ['softfail.test', 'softfail'], ['neutral.test', 'neutral'],
      ['none.test', 'none'], ['temp.test', 'temperror'], ['perm.test', 'permerror'],
    ];
    for (const [domain, result] of cases) {
      const m = message(`someone@${domain}`);
      assert.match(await send(port, { from: `bounce@${domain}`, data: m.text }), /^250 /, domain);
      const ar = ours(await delivered(srv, m.id));
      assert.match(ar, new RegExp(`; spf=${result} \\([^)]*\\) smtp\\.mailfrom=${domain.replace(/\./g, '\\.')}`), `${domain}: ${ar}`);
      assert.match(ar, /; spf=pass \([^)]*\) smtp\.helo=mail\.sender\.test/, 'HELO identity');
      assert.match(ar, /^Authentication-Results: mx\.tern\.test; iprev=pass policy\.iprev=127\.0\.0\.1 \(mail\.sender\.test\);/);
    }
    // The null reverse-path: SPF checks the HELO identity (RFC 7208 §2.4), once.
    const m = message('mailer-daemon@pass.test');
    assert.match(await send(port, { from: '', data: m.text }), /^250 /);
    const ar = ours(await delivered(srv, m.id));
    assert.equal(ar.match(/spf=/g)?.length, 1, ar);
    assert.match(ar, /spf=pass \([^)]*\) smtp\.helo=mail\.sender\.test/);
  });

  it('SPF fail: marked by default, 550 5.7.23 where the recipient domain says reject', async () => {
    const m = message('someone@fail.test');
    assert.match(await send(port, { from: 'bounce@fail.test', to: ['carol@catch.test'], data: m.text }), /^550 5\.7\.23 SPF validation failed/);
    assert.match(await send(port, { from: 'bounce@fail.test', to: ['alice@tern.test'], data: m.text }), /^250 /);
    assert.match(ours(await delivered(srv, m.id)), /spf=fail/);
    // Softfail is not fail (RFC 7208 §8.5).
    const s = message('someone@softfail.test');
    assert.match(await send(port, { from: 'bounce@softfail.test', to: ['carol@catch.test'], data: s.text }), /^250 /);
  });

  it('DKIM: rsa and ed25519 pass; a tampered body and a revoked key fail', async () => {
    const m = message('news@dk.test');
    // MAIL FROM dk.test fails SPF: the DMARC pass below comes from the aligned signatures.
    const signed = await sign(m.text, [RSA_KEY, ED_KEY]);
    assert.match(await send(port, { from: 'bounce@dk.test', data: signed }), /^250 /);
    const ar = ours(await delivered(srv, m.id));
    assert.match(ar, /dkim=pass header\.d=dk\.test header\.i=@dk\.test header\.s=rsa header\.a=rsa-sha256/);
    assert.match(ar, /dkim=pass header\.d=dk\.test header\.i=@dk\.test header\.s=ed header\.a=ed25519-sha256/);
    assert.match(ar, /spf=fail/);
    assert.match(ar, /dmarc=pass .*header\.from=dk\.test/);

    // From a domain without DMARC, so the failures are delivered and can be read.
    const t = message('news@nodmarc.test', [], 'The original text.\r\n');
    const tampered = (await sign(t.text, [RSA_KEY])).replace('The original text.', 'The altered text.');
    assert.match(await send(port, { from: 'bounce@pass.test', data: tampered }), /^250 /);
    assert.match(ours(await delivered(srv, t.id)), /dkim=fail \(body hash did not verify\) header\.d=dk\.test/);

    const r = message('news@nodmarc.test');
    assert.match(await send(port, { from: 'bounce@pass.test', data: await sign(r.text, [key('dk.test', 'revoked')]) }), /^250 /);
    assert.match(ours(await delivered(srv, r.id)), /dkim=fail \(key revoked\) header\.d=dk\.test [^;]*header\.s=revoked/);
  });

  it('DKIM: a message signed by an independent signer (dkimsign from python3-dkim) verifies as pass', { skip: NEEDS_DKIMSIGN }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dkimsign-'));
    try {
      const keyFile = path.join(dir, 'rsa.pem');
      fs.writeFileSync(keyFile, rsa, { mode: 0o600 });
      const m = message('news@dk.test');
      const out = spawnSync('/usr/bin/python3', [DKIMSIGN, '--hcanon', 'relaxed', '--bcanon', 'relaxed', 'rsa', 'dk.test', keyFile], { input: m.text });
      assert.equal(out.status, 0, out.stderr.toString());
      // dkimsign folds its field with bare LF; a real MTA would send CRLF.
      const signed = out.stdout.toString('latin1').replace(/\r?\n/g, '\r\n');
      assert.match(signed, /^DKIM-Signature: /);
      assert.match(await send(port, { from: 'bounce@dk.test', data: signed }), /^250 /);
      const ar = ours(await delivered(srv, m.id));
      assert.match(ar, /dkim=pass header\.d=dk\.test [^;]*header\.s=rsa header\.a=rsa-sha256/);
      assert.match(ar, /dmarc=pass/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('DMARC: p=reject → 550 5.7.1, p=quarantine → Junk, p=none → inbox, sp= for subdomains, pct', async () => {
    const rej = message('ceo@dm-reject.test');
    assert.match(await send(port, { from: 'ceo@dm-reject.test', data: rej.text }), /^550 5\.7\.1 .*DMARC policy of dm-reject\.test/);

    const q = message('ceo@dm-quar.test');
    assert.match(await send(port, { from: 'ceo@dm-quar.test', data: q.text }), /^250 /);
    assert.match(ours(await delivered(srv, q.id, { folder: 'Junk' })), /dmarc=fail \(p=QUARANTINE[^)]*\) policy\.dmarc=quarantine header\.from=dm-quar\.test/);

    const none = message('ceo@dm-none.test');
    assert.match(await send(port, { from: 'ceo@dm-none.test', data: none.text }), /^250 /);
    assert.match(ours(await delivered(srv, none.id)), /dmarc=fail \(p=NONE[^)]*\) policy\.dmarc=none/);

    // sp=reject applies to a subdomain; the organizational domain itself has p=none.
    assert.match(await send(port, { from: 'x@sub.sp.test', data: message('ceo@sub.sp.test').text }), /^550 5\.7\.1 /);
    const org = message('ceo@sp.test');
    assert.match(await send(port, { from: 'x@sp.test', data: org.text }), /^250 /);
    await delivered(srv, org.id);

    // pct=0: no failing message is sampled for reject, so each gets the next weaker policy (RFC 7489 §6.6.4).
    const pct = message('ceo@dm-pct.test');
    assert.match(await send(port, { from: 'ceo@dm-pct.test', data: pct.text }), /^250 /);
    await delivered(srv, pct.id, { folder: 'Junk' });

    // Two author domains: DMARC cannot be evaluated (RFC 7489 §6.6.1); recorded as such, not silently left out.
    const two = message('ceo@dm-reject.test, friend@pass.test');
    assert.match(await send(port, { from: 'bounce@pass.test', data: two.text }), /^250 /);
    assert.match(ours(await delivered(srv, two.id)), /dmarc=permerror \(multiple-author-domains\)/);

    // A rejected message was never queued.
    assert.equal(mailbox(srv.dataDir, 'tern.test', 'alice').map((f) => fs.readFileSync(f, 'latin1')).filter((t) => t.includes(rej.id)).length, 0);
  });

  it('DMARC alignment: relaxed passes a subdomain, strict (aspf=s, adkim=s) does not', async () => {
    // SPF: MAIL FROM bounce.align.test passes SPF and aligns with From align.test (relaxed).
    const relaxed = message('ceo@align.test');
    assert.match(await send(port, { from: 'bounce@bounce.align.test', data: relaxed.text }), /^250 /);
    assert.match(ours(await delivered(srv, relaxed.id)), /dmarc=pass .*header\.from=align\.test/);
    // DKIM: d=mail.align.test aligns with align.test (relaxed), with SPF failing.
    const dk = message('ceo@align.test');
    assert.match(await send(port, { from: 'bounce@fail.test', data: await sign(dk.text, [key('mail.align.test', 'rsa')]) }), /^250 /);
    assert.match(ours(await delivered(srv, dk.id)), /dmarc=pass/);

    // aspf=s: the same subdomain MAIL FROM does not align.
    assert.match(await send(port, { from: 'bounce@bounce.strict.test', data: message('ceo@strict.test').text }), /^550 5\.7\.1 /);
    // adkim=s: a signature of a subdomain does not align, one of the From domain itself does.
    assert.match(await send(port, { from: 'bounce@fail.test', data: await sign(message('ceo@strict.test').text, [key('mail.strict.test', 'rsa')]) }), /^550 5\.7\.1 /);
    const exact = message('ceo@strict.test');
    assert.match(await send(port, { from: 'bounce@fail.test', data: await sign(exact.text, [key('strict.test', 'rsa')]) }), /^250 /);
    assert.match(ours(await delivered(srv, exact.id)), /dmarc=pass/);
  });

  it('ARC: a sealed chain validates as arc=pass', async () => {
    const m = message('list@arc.test');
    const seal = await sealMessage(Buffer.from(m.text), {
      signingDomain: 'arc.test',
      selector: 'arc',
      privateKey: rsa,
      authResults: 'mx.arc.test; spf=pass smtp.mailfrom=arc.test',
      cv: 'none',
    });
    assert.ok(seal.length > 0, 'sealed');
    assert.match(await send(port, { from: 'bounce@pass.test', data: seal.toString('latin1') + m.text }), /^250 /);
    assert.match(ours(await delivered(srv, m.id)), /arc=pass \(i=1[^)]*\)/);
    // The same chain over an altered body is broken.
    const broken = seal.toString('latin1') + m.text.replace('Hello.', 'Hello!');
    const b = message('list@arc.test');
    assert.match(await send(port, { from: 'bounce@pass.test', data: broken.replace(m.id, b.id) }), /^250 /);
    assert.match(ours(await delivered(srv, b.id)), /arc=fail/);
  });

  it('removes Authentication-Results fields forged with our authserv-id, keeps others, adds ours once at the top', async () => {
    const m = message('someone@pass.test', [
      'Authentication-Results: mx.tern.test; dkim=pass; spf=pass; dmarc=pass',
      'Authentication-Results: other.example;',
      '\tspf=pass smtp.mailfrom=pass.test',
      'Authentication-Results: MX.TERN.TEST (forged);',
      '\tdmarc=pass header.from=bank.example',
    ]);
    assert.match(await send(port, { from: 'bounce@pass.test', data: m.text }), /^250 /);
    const text = await delivered(srv, m.id);
    ours(text);
    const ar = fields(text).filter((f) => /^Authentication-Results:/i.test(f));
    assert.deepEqual(ar.slice(1), ['Authentication-Results: other.example; spf=pass smtp.mailfrom=pass.test']);
    assert.doesNotMatch(text, /forged|header\.from=bank\.example|dkim=pass; spf=pass; dmarc=pass/);
  });

  it('a trusted forwarder is never rejected or quarantined for SPF or DMARC, only marked', async () => {
    const m = message('ceo@dm-reject.test');
    assert.match(await send(port, { from: 'ceo@dm-reject.test', to: ['alice@tern.test', 'carol@catch.test'], data: m.text, localAddress: FORWARDER }), /^250 /);
    const ar = ours(await delivered(srv, m.id));
    assert.match(ar, /iprev=permerror policy\.iprev=127\.0\.0\.2;/);
    assert.match(ar, /spf=fail/);
    assert.match(ar, /dmarc=fail/);
    await delivered(srv, m.id, { domain: 'catch.test', user: 'carol' });
  });

  it('mail from a trusted network is not checked, but forged fields are still removed', async () => {
    const m = message('someone@dm-reject.test', ['Authentication-Results: mx.tern.test; dmarc=pass']);
    assert.match(await send(port, { from: 'ceo@dm-reject.test', data: m.text, localAddress: TRUSTED }), /^250 /);
    const text = await delivered(srv, m.id);
    assert.doesNotMatch(text, /Authentication-Results/i);
  });

  it('a header section too large to verify is refused (the checks cannot be padded away)', async () => {
    // The chunk that ends the header section is not counted, so go well past the limit.
    const pad = Array.from({ length: Math.ceil((MAX_VERIFIED_HEADER + 128 * 1024) / 900) }, (_, i) => `X-Pad-${i}: ${'p'.repeat(880)}`);
    const m = message('ceo@dm-reject.test', pad);
    assert.match(await send(port, { from: 'ceo@dm-reject.test', data: m.text }), /^552 5\.3\.4 /);
  });
});

describe('inbound checks that do not finish in time', () => {
  it('are recorded as temperror and the message is delivered', async () => {
    const dns = await startDnsServer(ZONE);
    const srv = await startServer({ dns: { servers: [dns.address], timeout: '2s' }, inbound: { enabled: true, timeout: '300ms' } });
    try {
      const m = message('ceo@slow.test');
      const t0 = Date.now();
      assert.match(await send(srv.port('smtp'), { from: 'ceo@slow.test', data: m.text }), /^250 /);
      assert.ok(Date.now() - t0 < 2000, 'the reply did not wait for the DNS timeout');
      const ar = ours(await delivered(srv, m.id));
      // SPF of MAIL FROM starts at MAIL with its own limit of the same length (RFC 7208 §4.6.4),
      // the whole set's deadline at the end of DATA: which of the two fires first is a race of a few
      // milliseconds. Either way SPF is a temperror and the message is delivered.
      assert.match(ar, /dkim=temperror \(checks timed out\); spf=temperror \(checks timed out\)|spf=temperror \([^)]*SPF evaluation time limit exceeded\)/);
    } finally {
      await srv.stop();
      await dns.close();
    }
  });
});
