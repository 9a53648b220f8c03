import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { createResolver, DnsError, type Resolver } from './resolver.ts';
import { startDnsServer, type DnsServer } from '../../test/helpers/dns-server.ts';

let dns: DnsServer;
const TIMEOUT = 300;
const fresh = (cacheTtl?: number): Resolver => createResolver({ servers: [dns.address], timeout: TIMEOUT }, cacheTtl === undefined ? {} : { cacheTtl });
/** Queries the server saw since the last call. */
const seen = () => dns.queries.splice(0).map((q) => `${q.type} ${q.name}`);

before(async () => {
  dns = await startDnsServer({
    'host.test': { A: ['192.0.2.1', '192.0.2.2'], AAAA: ['2001:db8::1'], TXT: ['v=spf1 -all', ['part one ', 'part two']] },
    'mail.test': { MX: [{ preference: 10, exchange: 'host.test' }, { preference: 20, exchange: 'backup.test' }] },
    'empty.test': { TXT: ['only text'] },
    'null.test': { MX: [{ preference: 0, exchange: '.' }] },
    'alias.test': { CNAME: 'alias2.test' },
    'alias2.test': { CNAME: 'host.test' },
    'dangling.test': { CNAME: 'nowhere.test' },
    'mxalias.test': { CNAME: 'mail.test' },
    'big.test': { TXT: ['k='.padEnd(3000, 'x')] },
    'short.test': { A: ['192.0.2.9'], TTL: 0 },
    'fail.test': { SERVFAIL: true },
    'refused.test': { REFUSED: true },
    'slow.test': { TIMEOUT: true },
  });
});
after(() => dns.close());

async function rejectsWith(p: Promise<unknown>, code: string, temporary: boolean) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DnsError, String(err));
    assert.equal(err.code, code);
    assert.equal(err.temporary, temporary);
    return true;
  });
}

test('answers for each type', async () => {
  const r = fresh();
  assert.deepEqual(await r.a('host.test'), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(await r.aaaa('host.test'), ['2001:db8::1']);
  assert.deepEqual(await r.mx('mail.test'), [
    { exchange: 'host.test', priority: 10 },
    { exchange: 'backup.test', priority: 20 },
  ]);
  assert.deepEqual(await r.txt('host.test'), [['v=spf1 -all'], ['part one ', 'part two']]);
});

test('NODATA is an empty answer, NXDOMAIN a permanent error', async () => {
  const r = fresh();
  assert.deepEqual(await r.mx('host.test'), []);
  assert.deepEqual(await r.a('empty.test'), []);
  assert.deepEqual(await r.aaaa('empty.test'), []);
  assert.deepEqual(await r.txt('mail.test'), []);
  await rejectsWith(r.mx('nope.test'), 'NXDOMAIN', false);
  await rejectsWith(r.a('nope.test'), 'NXDOMAIN', false);
  await rejectsWith(r.txt('nope.test'), 'NXDOMAIN', false);
});

test('SERVFAIL and REFUSED are temporary', async () => {
  const r = fresh();
  await rejectsWith(r.mx('fail.test'), 'SERVFAIL', true);
  await rejectsWith(r.a('fail.test'), 'SERVFAIL', true);
  await rejectsWith(r.mx('refused.test'), 'REFUSED', true);
});

test('a server that never answers is a temporary TIMEOUT after about 2 × timeout', async () => {
  const start = Date.now();
  await rejectsWith(fresh().mx('slow.test'), 'TIMEOUT', true);
  const took = Date.now() - start;
  assert.ok(took >= TIMEOUT && took < 6 * TIMEOUT, `took ${took} ms`);
  assert.deepEqual(seen().filter((q) => q === 'MX slow.test'), ['MX slow.test', 'MX slow.test']);
});

test('no server listening is a temporary error', async () => {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  await new Promise<void>((r) => sock.close(r));
  const r = createResolver({ servers: [`127.0.0.1:${port}`], timeout: TIMEOUT });
  await assert.rejects(r.a('host.test'), (err: unknown) => err instanceof DnsError && err.temporary);
});

test('CNAME chains are followed', async () => {
  const r = fresh();
  assert.deepEqual(await r.a('alias.test'), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(await r.aaaa('ALIAS.test.'), ['2001:db8::1']);
  assert.deepEqual(await r.mx('mxalias.test'), [
    { exchange: 'host.test', priority: 10 },
    { exchange: 'backup.test', priority: 20 },
  ]);
  assert.deepEqual(await r.mx('alias.test'), []);
  await rejectsWith(r.a('dangling.test'), 'NXDOMAIN', false);
});

test('null MX comes back with an empty exchange (RFC 7505)', async () => {
  assert.deepEqual(await fresh().mx('null.test'), [{ exchange: '', priority: 0 }]);
});

test('a TXT answer too big for UDP arrives over TCP, split into 255-octet strings', async () => {
  seen();
  const txt = await fresh().txt('big.test');
  assert.equal(txt.length, 1);
  assert.ok(txt[0]!.every((s) => s.length <= 255));
  assert.equal(txt[0]!.join(''), 'k='.padEnd(3000, 'x'));
  // Once over UDP (truncated), once over TCP.
  assert.deepEqual(seen(), ['TXT big.test', 'TXT big.test']);
});

test('the cache answers repeats without a query, per type and name', async () => {
  const r = fresh();
  seen();
  await r.a('host.test');
  await r.a('HOST.test.');
  await r.aaaa('host.test');
  await r.mx('mail.test');
  await r.mx('mail.test');
  await r.txt('host.test');
  await r.txt('host.test');
  assert.deepEqual(seen(), ['A host.test', 'AAAA host.test', 'MX mail.test', 'TXT host.test']);
  // A caller that changes what it got cannot change the cache.
  (await r.a('host.test')).length = 0;
  assert.deepEqual(await r.a('host.test'), ['192.0.2.1', '192.0.2.2']);
  assert.deepEqual(seen(), []);
});

test('the cache respects TTL 0, keeps NXDOMAIN and NODATA briefly (RFC 2308), and can be turned off', async () => {
  const r = fresh();
  seen();
  await r.a('short.test');
  await r.a('short.test');
  assert.deepEqual(await r.mx('host.test'), []);
  assert.deepEqual(await r.mx('host.test'), [], 'a cached NODATA is still an empty answer');
  await assert.rejects(r.a('nope.test'), (e: DnsError) => e.code === 'NXDOMAIN' && !e.temporary);
  await assert.rejects(r.a('nope.test'), (e: DnsError) => e.code === 'NXDOMAIN' && !e.temporary);
  await assert.rejects(r.resolve('host.test', 'MX'), (e: DnsError) => e.code === 'NODATA');
  assert.deepEqual(seen(), ['A short.test', 'A short.test', 'MX host.test', 'A nope.test', 'MX host.test']);
  const off = fresh(0);
  await off.a('host.test');
  await off.a('host.test');
  assert.deepEqual(seen(), ['A host.test', 'A host.test']);
});

test('the cache expires entries after cacheTtl', async () => {
  const r = fresh(50);
  seen();
  await r.mx('mail.test');
  await r.a('host.test'); // TTL 300 s, capped at 50 ms
  await new Promise((res) => setTimeout(res, 80));
  await r.mx('mail.test');
  await r.a('host.test');
  assert.deepEqual(seen(), ['MX mail.test', 'A host.test', 'MX mail.test', 'A host.test']);
});

test('concurrent identical lookups share one query', async () => {
  const r = fresh();
  seen();
  const [x, y] = await Promise.all([r.a('host.test'), r.a('host.test')]);
  assert.deepEqual(x, y);
  assert.deepEqual(seen(), ['A host.test']);
});
