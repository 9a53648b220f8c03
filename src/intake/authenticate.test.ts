// The streaming verifier on its own, over an in-memory resolver with node's
// contract: results whatever the chunking, abort, the pct reader, folding.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { createHook } from 'node:async_hooks';
import { InboundVerifier, dmarcPct, fold } from './authenticate.ts';
import { DkimSigner, dnsRecordFor, type DkimKey } from './dkim.ts';
import { nodeDnsError, type DnsResolve } from '../dns/mailauth-resolver.ts';
import { silentLogger } from '../util/log.ts';

const KEY: DkimKey = {
  domain: 'example.test',
  selector: 'ed',
  algorithm: 'ed25519-sha256',
  privateKey: crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
};
const ZONE: Record<string, unknown[]> = {
  'TXT example.test': [['v=spf1 ip4:192.0.2.1 -all']],
  'TXT _dmarc.example.test': [['v=DMARC1; p=quarantine; pct=50']],
  'TXT ed._domainkey.example.test': [[dnsRecordFor(KEY)]],
  'PTR 1.2.0.192.in-addr.arpa': ['mail.example.test'],
  'A mail.example.test': ['192.0.2.1'],
};
const resolve: DnsResolve = async (name, type) => {
  const v = ZONE[`${type} ${name}`];
  if (v) return v;
  throw nodeDnsError(Object.keys(ZONE).some((k) => k.endsWith(` ${name}`)) ? 'ENODATA' : 'ENOTFOUND', name, type);
};
const verifier = new InboundVerifier({ authservId: 'mx.tern.test', resolve, timeout: 5000, log: silentLogger });

async function signed(): Promise<Buffer> {
  const text = 'From: a@example.test\r\nTo: b@tern.test\r\nSubject: s\r\n\r\n' + 'line of body\r\n'.repeat(500);
  const s = new DkimSigner([KEY]);
  s.write(Buffer.from(text));
  return Buffer.concat([Buffer.from(await s.finish()), Buffer.from(text)]);
}

test('the same results however the message is split', async () => {
  const message = await signed();
  for (const step of [1, 7, 100, 4096, message.length]) {
    const v = verifier.begin({ ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' });
    for (let at = 0; at < message.length; at += step) v.write(message.subarray(at, at + step));
    const r = await v.finish();
    assert.deepEqual(r.dkim.map((d) => `${d.result} ${d.domain} ${d.algo}`), ['pass example.test ed25519-sha256'], `step ${step}`);
    assert.equal(r.spf.result, 'pass');
    assert.equal(r.helo, 'none');
    assert.deepEqual(r.dmarc, { result: 'pass', domain: 'example.test', policy: 'quarantine', pct: 50 });
    assert.equal(r.iprev.result, 'pass');
    assert.match(r.header, /^Authentication-Results: mx\.tern\.test;\r\n iprev=pass policy\.iprev=192\.0\.2\.1 \(mail\.example\.test\);\r\n dkim=pass /);
    assert.match(r.header, /\r\n$/);
    assert.doesNotMatch(r.header.slice(0, -2), /\r\n(?![ \t])/, 'one field');
  }
});

// What a Verification can leave behind: mailauth's authenticate() waiting
// forever for the rest of a message that will never come (its promises, the
// stream it reads and the hashes it holds), DNS queries of the message's
// checks (SPF of MAIL FROM, DKIM keys, DMARC) started after the message was
// given up, timers, and a rejection nobody handles. abort() must end the
// first, prevent the second, and leave none of the rest. The client checks
// (iprev here) are shared per client through the cache, so they run to their
// end; they must settle quietly too.
test('abort leaves nothing behind', async () => {
  // DNS answers are held until after abort(), so the client checks are in flight when it runs.
  const held: (() => void)[] = [];
  const asked: string[] = [];
  let outstanding = 0;
  const heldResolve: DnsResolve = (name, type) => {
    asked.push(`${type} ${name}`);
    outstanding++;
    return new Promise<unknown[]>((ok) => held.push(() => ok(resolve(name, type)))).finally(() => outstanding--);
  };
  const slow = new InboundVerifier({ authservId: 'mx.tern.test', resolve: heldResolve, timeout: 5000, log: silentLogger });
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  const resourcesBefore = process.getActiveResourcesInfo().sort();

  // Every promise created by begin(), write() and abort() (mailauth's included), until it settles.
  const unsettled = new Map<number, string>();
  let recording = true;
  const hook = createHook({
    init(id, type) {
      if (recording && type === 'PROMISE') unsettled.set(id, (new Error().stack ?? '').split('\n').filter((l) => !l.includes('node:internal')).slice(2, 5).join(' |'));
    },
    promiseResolve(id) {
      unsettled.delete(id);
    },
  }).enable();
  let askedAtAbort: string[];
  try {
    // A null MAIL FROM and no HELO: the only client check is iprev (no HELO SPF), so
    // every query after abort() that is not iprev's belongs to the message's checks.
    // (The HELO SPF check would also leave one promise pending by design: mailauth's
    // elapsed-time race, whose losing timer promise is cleared, never settled.)
    const v = slow.begin({ ip: '192.0.2.1', sender: '' });
    v.write(Buffer.from('From: a@example.test\r\nDKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=ed; h=from; bh=x; b=y\r\n\r\nbody\r\n'));
    v.abort();
    recording = false;
    askedAtAbort = [...asked];
    for (let i = 0; i < 10 && held.length; i++) {
      for (const answer of held.splice(0)) answer();
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    hook.disable();
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(askedAtAbort, ['PTR 1.2.0.192.in-addr.arpa'], 'iprev was in flight when abort() ran');
  assert.deepEqual(asked, ['PTR 1.2.0.192.in-addr.arpa', 'A mail.example.test'], 'no DNS query of the message\'s checks (SPF, DKIM key, DMARC) after abort()');
  assert.equal(outstanding, 0, 'no DNS query left outstanding');
  assert.deepEqual([...unsettled.values()], [], 'every promise of the verification settled (authenticate() is not left waiting for the rest of the message)');
  assert.deepEqual(process.getActiveResourcesInfo().sort(), resourcesBefore, 'no timer or handle left');
  assert.deepEqual(unhandled, [], 'no unhandled rejection');
});

test('dmarcPct and fold', () => {
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=25'), 25);
  assert.equal(dmarcPct('v=DMARC1; p=reject'), 100);
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=250'), 100);
  assert.equal(dmarcPct('v=DMARC1; p=reject; pct=x'), 100);
  const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
  const folded = fold(long);
  assert.equal(folded.replace(/\r\n /g, ' '), long);
  assert.ok(folded.split('\r\n').every((l) => l.length <= 160));
});

/** The resolver, counting the TXT queries of each name (where SPF records live, RFC 7208 §3). */
function countingTxt(base: DnsResolve): { txt: Map<string, number>; resolve: DnsResolve } {
  const txt = new Map<string, number>();
  return {
    txt,
    resolve: (name, type) => {
      if (type === 'TXT') txt.set(name, (txt.get(name) ?? 0) + 1);
      return base(name, type);
    },
  };
}

/** The SPF row of the MAIL FROM identity (smtp.mailfrom, or smtp.helo when MAIL FROM is null). */
function mailFromSpfRow(header: string): string | undefined {
  return header.replace(/\r\n[ \t]+/g, ' ').split(/; ?/).find((r) => /^ ?spf=/.test(r.trim()) && r.includes('smtp.mailfrom='))?.trim();
}

test('SPF of MAIL FROM starts at begin() and is checked once per client IP, address and HELO', async () => {
  const dns = countingTxt(resolve);
  const v = new InboundVerifier({ authservId: 'mx.tern.test', resolve: dns.resolve, timeout: 5000, log: silentLogger });
  const message = await signed();
  const client = { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' };
  const run = async (c: typeof client) => {
    const check = v.begin(c);
    check.write(message);
    return check.finish();
  };

  const first = v.begin(client);
  await new Promise((r) => setImmediate(r));
  assert.equal(dns.txt.get('example.test'), 1, 'asked before the first byte of the message');
  first.write(message);
  const a = await first.finish();
  const b = await run(client);
  assert.equal(dns.txt.get('example.test'), 1, 'the second message of the client asks nothing');
  assert.equal(a.spf.result, 'pass');
  assert.deepEqual(b.spf, a.spf);
  assert.equal(mailFromSpfRow(b.header), mailFromSpfRow(a.header));
  assert.match(mailFromSpfRow(a.header) ?? '', /^spf=pass .* smtp\.mailfrom=example\.test$/);
  assert.equal(b.header, a.header, 'the same field');

  // RFC 7208 §7.2: %{l} and %{s} expand the local part, %{i} the IP, %{h} the HELO name.
  const other = await run({ ...client, sender: 'Bounce@example.test' });
  assert.equal(dns.txt.get('example.test'), 2, 'another local part (case kept) is checked again');
  assert.equal(other.spf.result, 'pass');
  const elsewhere = await run({ ...client, ip: '192.0.2.2' });
  assert.equal(dns.txt.get('example.test'), 3, 'another IP is checked again');
  assert.equal(elsewhere.spf.result, 'fail');
  await run({ ...client, helo: 'relay.example.test' });
  assert.equal(dns.txt.get('example.test'), 4, 'another HELO name is checked again');
  // The result repeats the domain as written (smtp.mailfrom=EXAMPLE.test), so it is not shared across spellings.
  const upper = await run({ ...client, sender: 'bounce@EXAMPLE.test' });
  assert.equal(dns.txt.get('example.test'), 5, 'the domain spelt otherwise is checked again');
  assert.match(mailFromSpfRow(upper.header) ?? '', /smtp\.mailfrom=EXAMPLE\.test$/);
  await run({ ...client, ip: '192.0.2.2' });
  await run({ ...client, sender: 'Bounce@example.test' });
  assert.equal(dns.txt.get('example.test'), 5, 'each of them is kept too');
});

test('SPF of HELO as the MAIL FROM identity (null reverse-path, RFC 7208 §2.4) is kept per client too', async () => {
  const dns = countingTxt(resolve);
  const v = new InboundVerifier({ authservId: 'mx.tern.test', resolve: dns.resolve, timeout: 5000, log: silentLogger });
  const message = await signed();
  const outcomes = [];
  for (let i = 0; i < 2; i++) {
    const check = v.begin({ ip: '192.0.2.1', helo: 'example.test', sender: '' });
    check.write(message);
    outcomes.push(await check.finish());
  }
  assert.equal(dns.txt.get('example.test'), 1);
  assert.equal(outcomes[0]!.spf.result, 'pass');
  assert.equal(outcomes[0]!.helo, undefined, 'no separate HELO check');
  assert.match(outcomes[0]!.header, /\r\n spf=pass [^;]*smtp\.helo=example\.test;/);
  assert.equal(outcomes[1]!.header, outcomes[0]!.header);
});

test('a temperror SPF result of MAIL FROM is not kept', async () => {
  const dns = countingTxt(resolve);
  let failing = 1;
  const flaky: DnsResolve = (name, type) => {
    if (type === 'TXT' && name === 'example.test' && failing-- > 0) {
      dns.txt.set(name, (dns.txt.get(name) ?? 0) + 1);
      return Promise.reject(nodeDnsError('ESERVFAIL', name, type));
    }
    return dns.resolve(name, type);
  };
  const v = new InboundVerifier({ authservId: 'mx.tern.test', resolve: flaky, timeout: 5000, log: silentLogger });
  const message = await signed();
  const client = { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' };
  const results: string[] = [];
  for (let i = 0; i < 3; i++) {
    const check = v.begin(client);
    check.write(message);
    results.push((await check.finish()).spf.result);
  }
  assert.deepEqual(results, ['temperror', 'pass', 'pass']);
  assert.equal(dns.txt.get('example.test'), 2, 'asked again after the temperror, then kept');
});

test('the timeout bounds a MAIL FROM SPF check that never answers, and abort() is quiet', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const dns = countingTxt(resolve);
    const silent: DnsResolve = (name, type) => (type === 'TXT' && name === 'example.test' ? (dns.resolve(name, type), new Promise(() => {})) : dns.resolve(name, type));
    const v = new InboundVerifier({ authservId: 'mx.tern.test', resolve: silent, timeout: 150, log: silentLogger });
    const message = await signed();
    const client = { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' };
    const aborted = v.begin(client);
    aborted.write(message.subarray(0, 100));
    aborted.abort();
    const started = Date.now();
    const check = v.begin(client);
    check.write(message);
    const r = await check.finish();
    assert.ok(Date.now() - started < 1000, 'within the timeout');
    // SPF's own elapsed-time limit (RFC 7208 §4.6.4, the same timeout) ends it first, counted from begin().
    assert.equal(r.spf.result, 'temperror');
    assert.equal(r.incomplete, undefined, 'the other checks finished');
    assert.match(r.header, /\r\n spf=temperror [^;]*smtp\.mailfrom=example\.test;/);
    assert.equal(dns.txt.get('example.test'), 1, 'the aborted message and the next one shared the check in flight');
    const again = v.begin(client);
    await new Promise((r) => setImmediate(r));
    assert.equal(dns.txt.get('example.test'), 2, 'the temperror was not kept');
    again.abort();
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});
