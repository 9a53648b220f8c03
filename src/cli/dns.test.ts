// `tern dns DOMAIN`: every line is a comment or a zone file record
// `NAME. IN TYPE RDATA`, the set of records is complete, DKIM keys appear as
// `tern dkim` printed them, and the `_mta-sts` id follows the policy text.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { writeConfig } from '../../test/helpers/server.ts';
import { loadConfig } from '../config/load.ts';
import type { TernConfig } from '../config/types.ts';
import { generateKey } from '../intake/dkim.ts';
import { policyId, policyText } from '../api/mta-sts.ts';
import { runDns } from './dns.ts';

interface Rec { name: string; type: string; data: string }

/** The TXT value: the character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2). */
function txtValue(data: string): string {
  const parts = [...data.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1'));
  assert.equal(data.replace(/"((?:[^"\\]|\\.)*)"/g, '').trim(), '', `only quoted strings in ${data}`);
  for (const p of parts) assert.ok(p.length <= 255, 'a character-string is at most 255 octets');
  return parts.join('');
}

/** Every line a comment, blank, or a record; the records parsed. */
function parseZone(text: string): Rec[] {
  const recs: Rec[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith(';')) continue;
    const m = /^(\S+)\. IN (MX|TXT|CNAME) (.+)$/.exec(line);
    assert.ok(m, `not a zone file record: ${line}`);
    recs.push({ name: m[1]!, type: m[2]!, data: m[3]! });
  }
  return recs;
}

function run(config: TernConfig, argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runDns(config, argv, { write: (s: string) => void (out += s) }, { write: (s: string) => void (err += s) });
  return { code, out, err };
}

describe('tern dns', () => {
  let cfg: ReturnType<typeof writeConfig>;
  let config: TernConfig;
  let rsaRecord: string;
  before(async () => {
    cfg = writeConfig({ domains: [{ name: 'tern.test', mailboxes: ['alice'] }], mtaSts: { mode: 'enforce' } });
    config = loadConfig(cfg.file);
    rsaRecord = (await generateKey(config.dataDir, 'tern.test', { selector: 'rsa1', algorithm: 'rsa' })).dnsRecord;
    await generateKey(config.dataDir, 'tern.test', { selector: 'ed1', algorithm: 'ed25519' });
  });
  after(() => fs.rmSync(cfg.dir, { recursive: true, force: true }));

  it('prints every record the domain should publish, each a zone file line', () => {
    const r = run(config, ['TERN.test']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '');
    const recs = parseZone(r.out);
    const by = (name: string, type: string): Rec[] => recs.filter((x) => x.name === name && x.type === type);

    assert.deepEqual(by('tern.test', 'MX').map((x) => x.data), ['10 mx.tern.test.']);
    assert.deepEqual(by('tern.test', 'TXT').map((x) => txtValue(x.data)), ['v=spf1 mx -all']);
    assert.deepEqual(by('rsa1._domainkey.tern.test', 'TXT').map((x) => txtValue(x.data)), [rsaRecord]);
    assert.match(txtValue(by('ed1._domainkey.tern.test', 'TXT')[0]!.data), /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]+=*$/);
    assert.deepEqual(by('_dmarc.tern.test', 'TXT').map((x) => txtValue(x.data)), ['v=DMARC1; p=quarantine; rua=mailto:postmaster@tern.test']);
    assert.deepEqual(by('_mta-sts.tern.test', 'TXT').map((x) => txtValue(x.data)), [`v=STSv1; id=${policyId(policyText(config.mtaSts))}`]);
    assert.deepEqual(by('mta-sts.tern.test', 'CNAME').map((x) => x.data), ['mx.tern.test.']);
    assert.deepEqual(by('_smtp._tls.tern.test', 'TXT').map((x) => txtValue(x.data)), ['v=TLSRPTv1; rua=mailto:tlsrpt@tern.test']);
    assert.equal(recs.length, 8);
    // A 2048-bit RSA key is longer than one character-string: it is split, and the parts join back.
    assert.ok(by('rsa1._domainkey.tern.test', 'TXT')[0]!.data.split('" "').length >= 2);
  });

  it('the _mta-sts id changes when the policy does', () => {
    const id = (c: TernConfig): string => txtValue(parseZone(run(c, ['tern.test']).out).find((x) => x.name === '_mta-sts.tern.test')!.data);
    const a = id(config);
    assert.equal(id(config), a, 'stable');
    assert.notEqual(id({ ...config, mtaSts: { ...config.mtaSts, mode: 'testing' } }), a);
    assert.notEqual(id({ ...config, mtaSts: { ...config.mtaSts, mx: ['mx.tern.test', 'mx2.tern.test'] } }), a);
    assert.notEqual(id({ ...config, mtaSts: { ...config.mtaSts, maxAge: config.mtaSts.maxAge * 2 } }), a);
  });

  it('says when there is no DKIM key, and warns for a domain that is not served', () => {
    const r = run(config, ['other.test']);
    assert.equal(r.code, 0);
    assert.match(r.out, /^; No DKIM key for other\.test yet: make one with `tern dkim keygen other\.test`/m);
    assert.match(r.err, /warning: other\.test is not one of the configured domains \(tern\.test\)/);
    assert.equal(parseZone(r.out).filter((x) => x.name.includes('._domainkey.')).length, 0);
  });

  it('warns when the policy would not allow the MX it prints', () => {
    const r = run({ ...config, mtaSts: { ...config.mtaSts, mx: ['*.elsewhere.test'] } }, ['tern.test']);
    assert.equal(r.code, 0);
    assert.match(r.err, /mtaSts\.mx \(\*\.elsewhere\.test\) does not match the hostname mx\.tern\.test/);
    assert.equal(run({ ...config, mtaSts: { ...config.mtaSts, mx: ['*.tern.test'] } }, ['tern.test']).err, '');
  });

  it('refuses bad arguments', () => {
    assert.equal(run(config, []).code, 2);
    assert.equal(run(config, ['a.test', 'b.test']).code, 2);
    assert.equal(run(config, ['--json', 'a.test']).code, 2);
    assert.equal(run(config, ['../etc']).code, 1);
    assert.equal(run(config, ['--config', cfg.file, 'tern.test']).code, 0);
  });
});
