// mailauth's steps composed (mailauth-steps.ts) against mailauth's own
// authenticate(), the reference, over an in-memory resolver: for signed,
// unsigned, DMARC pass and fail, null-sender, several-author and sealed
// (and sealed again) messages, the same result object, the same fields to
// prepend byte for byte, and the same Authentication-Results rows and ARC
// set from the Verification that uses it.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { PassThrough } from 'node:stream';
import { createRequire } from 'node:module';
import type { AuthenticateOptions, AuthenticateResult } from 'mailauth';
import { InboundVerifier, type ArcSealKey, type ClientFacts } from './authenticate.ts';
import { checkMessage, spfHelo } from './mailauth-steps.ts';
import { checkSpf, spfOptions } from './spf.ts';
import { DkimSigner, dnsRecordFor, type DkimKey } from './dkim.ts';
import { nodeDnsError, type DnsResolve } from '../dns/mailauth-resolver.ts';
import { silentLogger } from '../util/log.ts';

const { authenticate } = createRequire(import.meta.url)('mailauth') as {
  authenticate(input: PassThrough, opts: AuthenticateOptions): Promise<AuthenticateResult>;
};

const AUTHSERV_ID = 'mx.tern.test';
const TIMEOUT = 5000;

function rsaPem(): string {
  return crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}
const ED: DkimKey = {
  domain: 'example.test',
  selector: 'ed',
  algorithm: 'ed25519-sha256',
  privateKey: crypto.generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
};
const RSA: DkimKey = { domain: 'example.test', selector: 'rsa', algorithm: 'rsa-sha256', privateKey: rsaPem() };
const STRICT: DkimKey = { domain: 'strict.test', selector: 's', algorithm: 'ed25519-sha256', privateKey: ED.privateKey };
const SUB: DkimKey = { domain: 'sub.strict.test', selector: 's', algorithm: 'ed25519-sha256', privateKey: ED.privateKey };
const SEAL: ArcSealKey = { domain: 'forward.test', selector: 'arc', privateKey: rsaPem() };

const ZONE: Record<string, unknown[]> = {
  'TXT example.test': [['v=spf1 ip4:192.0.2.1 -all']],
  'TXT mail.example.test': [['v=spf1 a -all']],
  'A mail.example.test': ['192.0.2.1'],
  'TXT _dmarc.example.test': [['v=DMARC1; p=quarantine; pct=50']],
  'TXT ed._domainkey.example.test': [[dnsRecordFor(ED)]],
  'TXT rsa._domainkey.example.test': [[dnsRecordFor(RSA)]],
  'TXT strict.test': [['v=spf1 ip4:192.0.2.9 -all']],
  'TXT _dmarc.strict.test': [['v=DMARC1; p=reject; adkim=s']],
  'TXT s._domainkey.strict.test': [[dnsRecordFor(STRICT)]],
  'TXT s._domainkey.sub.strict.test': [[dnsRecordFor(SUB)]],
  'TXT macro.test': [['v=spf1 exists:%{l}.%{i}._spf.macro.test -all']],
  'A alice.192.0.2.1._spf.macro.test': ['127.0.0.2'],
  'TXT arc._domainkey.forward.test': [[dnsRecordFor({ ...SEAL, algorithm: 'rsa-sha256' })]],
  'PTR 1.2.0.192.in-addr.arpa': ['mail.example.test'],
};
const resolve: DnsResolve = async (name, type) => {
  const v = ZONE[`${type} ${name}`];
  if (v) return v;
  throw nodeDnsError(Object.keys(ZONE).some((k) => k.endsWith(` ${name}`)) ? 'ENODATA' : 'ENOTFOUND', name, type);
};

async function signature(text: string, keys: DkimKey[]): Promise<string> {
  const s = new DkimSigner(keys);
  s.write(Buffer.from(text));
  return s.finish();
}
async function sign(text: string, keys: DkimKey[]): Promise<Buffer> {
  return Buffer.from((await signature(text, keys)) + text);
}

const body = 'A line of body.\r\n'.repeat(50);
const plain = (from: string): Buffer => Buffer.from(`From: ${from}\r\nTo: b@tern.test\r\nSubject: s\r\n\r\n${body}`);

/** The options the Verification gave authenticate() before it composed the steps itself. */
function referenceOptions(client: ClientFacts, seal?: ArcSealKey): AuthenticateOptions {
  const query = { ip: client.ip, helo: client.helo, sender: client.sender, authservId: AUTHSERV_ID, resolve, timeout: TIMEOUT };
  return {
    ...spfOptions(query),
    sender: client.sender || undefined,
    trustReceived: false,
    disableBimi: true,
    ...(seal ? { seal: { signingDomain: seal.domain, selector: seal.selector, privateKey: seal.privateKey } } : {}),
  };
}

function feed(message: Buffer): PassThrough {
  const input = new PassThrough();
  input.end(message);
  return input;
}

/** What finish() reads of a result, and everything else authenticate() returns but the Received chain Tern does not parse. */
function comparable(r: AuthenticateResult): unknown {
  const { receivedChain: _, ...rest } = r;
  return JSON.parse(JSON.stringify({ ...rest, dkimHidden: { arc: r.dkim.arc, seal: r.dkim.seal }, sealErrors: r.arc ? r.arc.sealErrors?.map((e) => e.err.message) : undefined }));
}

/** The rows of an Authentication-Results field after its authserv-id, unfolded. */
function rows(field: string): string[] {
  const value = field.replace(/\r\n[ \t]+/g, ' ').replace(/\r\n$/, '');
  return value.slice(value.indexOf(';') + 1).split(';').map((r) => r.trim()).filter((r) => r !== '');
}

interface Case {
  name: string;
  client: ClientFacts;
  message: () => Promise<Buffer>;
  seal?: ArcSealKey;
  /** What the case is about, as seen in the ARC set and field the Verification gives (so a case cannot quietly stop testing it). */
  shows: RegExp;
}

const cases: Case[] = [
  { name: 'signed twice, SPF and DMARC pass', shows: /dkim=pass [^;]*s=ed [^;]*;\r\n dkim=pass [^;]*s=rsa [\s\S]*\r\n spf=pass [\s\S]*\r\n dmarc=pass /, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' }, message: () => sign(plain('a@example.test').toString(), [ED, RSA]) },
  { name: 'unsigned, DMARC pass by SPF', shows: /dkim=none [\s\S]*\r\n spf=pass [\s\S]*\r\n dmarc=pass /, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' }, message: async () => plain('a@example.test') },
  { name: 'unsigned, SPF and DMARC fail', shows: /\r\n spf=fail [\s\S]*\r\n dmarc=fail /, client: { ip: '198.51.100.7', helo: 'evil.test', sender: 'bounce@example.test' }, message: async () => plain('a@example.test') },
  { name: 'tampered signature, DMARC fail', shows: /dkim=fail \(body hash did not verify\)[\s\S]*\r\n dmarc=fail /, client: { ip: '198.51.100.7', helo: 'evil.test', sender: 'x@evil.test' }, message: async () => Buffer.from((await sign(plain('a@example.test').toString(), [ED])).toString().replace('A line', 'B line')) },
  {
    name: 'strict DKIM alignment: a failing subdomain signature next to a passing one', shows: /dkim=fail [^;]*header\.d=sub\.strict\.test[\s\S]*\r\n dkim=pass [^;]*header\.d=strict\.test[\s\S]*\r\n dmarc=pass /,
    client: { ip: '198.51.100.7', helo: 'evil.test', sender: 'x@strict.test' },
    message: async () => {
      const text = plain('a@strict.test').toString();
      // d=sub.strict.test signed another body: its body hash fails here.
      return Buffer.from((await signature(text.replace('A line', 'B line'), [SUB])) + (await signature(text, [STRICT])) + text);
    },
  },
  { name: 'null sender: SPF of HELO', shows: /\r\n spf=pass [^;]*smtp\.helo=mail\.example\.test;/, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: '' }, message: async () => plain('a@example.test') },
  { name: 'null sender, no HELO', shows: /\r\n spf=none [^;]*smtp\.helo="\[192\.0\.2\.1\]";/, client: { ip: '192.0.2.1', sender: '' }, message: async () => plain('a@example.test') },
  { name: 'HELO a bare IP', shows: /\r\n spf=none [^;]*smtp\.helo="\[192\.0\.2\.1\]";/, client: { ip: '192.0.2.1', helo: '192.0.2.1', sender: '' }, message: async () => plain('a@example.test') },
  { name: 'SPF macros of the local part', shows: /\r\n spf=pass [^;]*smtp\.mailfrom=alice@macro\.test;/, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'alice@macro.test' }, message: async () => plain('a@macro.test') },
  { name: 'two author domains: no DMARC', shows: /\r\n dmarc=permerror \(multiple-author-domains\)/, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' }, message: async () => plain('a@example.test, b@other.test') },
  { name: 'sealed', shows: /^ARC-Seal: i=1; [^;]*; t=\d+; cv=none; d=forward\.test;[\s\S]*\r\nAuthentication-Results: /, client: { ip: '192.0.2.1', helo: 'mail.example.test', sender: 'bounce@example.test' }, message: () => sign(plain('a@example.test').toString(), [ED]), seal: SEAL },
];

async function compare(t: TestContext, c: Case, message: Buffer): Promise<AuthenticateResult> {
  // The seal's t= is the time of sealing: one clock for both runs, so the signatures are the same bytes.
  t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
  const reference = await authenticate(feed(message), referenceOptions(c.client, c.seal));
  // Fresh options: dkimVerify() adds the body hash to the seal options it is given.
  const options = referenceOptions(c.client, c.seal);
  const spf = checkSpf({ ip: c.client.ip, helo: spfHelo(c.client.ip, c.client.helo), sender: c.client.sender, authservId: AUTHSERV_ID, resolve, timeout: TIMEOUT });
  const composed = await checkMessage(feed(message), { ip: c.client.ip, sender: options.sender, mta: AUTHSERV_ID, resolver: options.resolver!, strict: true, seal: options.seal }, spf);
  assert.equal(composed.headers, reference.headers, `${c.name}: the fields to prepend`);
  assert.deepEqual(comparable(composed), comparable(reference), `${c.name}: the result`);

  // The Verification over the composition: its rows are authenticate()'s, between iprev and the HELO check.
  const v = new InboundVerifier({ authservId: AUTHSERV_ID, resolve, timeout: TIMEOUT, log: silentLogger }).begin(c.client, c.seal);
  v.write(message);
  const outcome = await v.finish();
  const ours = rows(outcome.header).filter((r) => !/^iprev=/.test(r) && !(outcome.helo !== undefined && r.startsWith('spf=') && r.includes('smtp.helo=')));
  const arField = reference.headers.split(/\r\n(?![ \t])/).find((f) => f.startsWith('Authentication-Results:'))!;
  const expected = rows(arField);
  const skip = reference.dmarcSkipReason && reference.dmarcSkipReason !== 'no-author-domain' ? [`dmarc=permerror (${reference.dmarcSkipReason})`] : [];
  assert.deepEqual(ours, [...expected, ...skip], `${c.name}: the Authentication-Results rows`);
  assert.match((outcome.arcSet ?? '') + outcome.header, c.shows, `${c.name}: what it is about`);
  if (c.seal) {
    const set = reference.headers.split(/\r\n(?![ \t])/).filter((f) => /^ARC-/.test(f));
    assert.equal(set.length, 3, `${c.name}: sealed`);
    assert.equal(outcome.arcSet, set.join('\r\n') + '\r\n', `${c.name}: the ARC set`);
  }
  t.mock.timers.reset();
  return reference;
}

for (const c of cases) {
  test(`the same as authenticate(): ${c.name}`, async (t) => {
    await compare(t, c, await c.message());
  });
}

test('the same as authenticate(): a sealed message sealed again (ARC chain pass, i=2)', async (t) => {
  const first = cases.find((c) => c.name === 'sealed')!;
  const message = await first.message();
  const once = await compare(t, first, message);
  const arc = once.headers.split(/\r\n(?![ \t])/).filter((f) => /^ARC-/.test(f));
  const again = Buffer.concat([Buffer.from(arc.join('\r\n') + '\r\n'), message]);
  const twice = await compare(t, { ...first, name: 'sealed again', shows: /^ARC-Seal: i=2; [^;]*; t=\d+; cv=pass;[\s\S]*\r\n arc=pass /, client: { ip: '203.0.113.5', helo: 'forward.test', sender: 'srs@forward.test' } }, again);
  assert.equal(twice.arc && twice.arc.status.result, 'pass');
  assert.match(twice.headers, /^ARC-Seal: i=2;/);
});
