// mailauth's resolver contract over our resolver and the real test DNS
// server: node's answer shapes, and node's error codes where mailauth tells
// "no such data" (ENOTFOUND/ENODATA, EBADNAME) from "try again" (the rest).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createResolver } from './resolver.ts';
import { mailauthResolver, type DnsResolve } from './mailauth-resolver.ts';
import { checkSpf } from '../intake/spf.ts';
import { startDnsServer, type DnsServer } from '../../test/helpers/dns-server.ts';

let dns: DnsServer;
let resolve: DnsResolve;

before(async () => {
  dns = await startDnsServer({
    'host.test': { A: ['192.0.2.1'], AAAA: ['2001:db8::1'], TXT: ['v=spf1 ip4:192.0.2.1 -all', ['two ', 'strings']], MX: [{ preference: 5, exchange: 'host.test' }] },
    '1.2.0.192.in-addr.arpa': { PTR: ['host.test'] },
    'alias.test': { CNAME: 'host.test' },
    'fail.test': { SERVFAIL: true },
    'refused.test': { REFUSED: true },
    'slow.test': { TIMEOUT: true },
    'spf-servfail.test': { TXT: ['v=spf1 include:fail.test -all'] },
    'spf-void.test': { TXT: ['v=spf1 a:n1.host.test a:n2.host.test a:n3.host.test -all'] },
  });
  resolve = mailauthResolver(createResolver({ servers: [dns.address], timeout: 200 }));
});
after(() => dns.close());

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return (e as { code: string }).code;
  }
}

test('answers in the shape of dns.promises.resolve', async () => {
  assert.deepEqual(await resolve('host.test', 'A'), ['192.0.2.1']);
  assert.deepEqual(await resolve('host.test', 'AAAA'), ['2001:db8::1']);
  assert.deepEqual(await resolve('host.test', 'TXT'), [['v=spf1 ip4:192.0.2.1 -all'], ['two ', 'strings']]);
  const [mx] = (await resolve('host.test', 'MX')) as { exchange: string; priority: number }[];
  assert.deepEqual([mx?.exchange, mx?.priority], ['host.test', 5]);
  assert.deepEqual(await resolve('1.2.0.192.in-addr.arpa', 'PTR'), ['host.test']);
  assert.deepEqual(await resolve('alias.test', 'A'), ['192.0.2.1'], 'CNAME followed');
});

test("errors carry node's codes", async () => {
  assert.equal(await code(resolve('nope.test', 'TXT')), 'ENOTFOUND');
  assert.equal(await code(resolve('host.test', 'PTR')), 'ENODATA');
  assert.equal(await code(resolve('1.2.0.192.in-addr.arpa', 'A')), 'ENODATA');
  assert.equal(await code(resolve('fail.test', 'TXT')), 'ESERVFAIL');
  assert.equal(await code(resolve('refused.test', 'TXT')), 'EREFUSED');
  assert.equal(await code(resolve('slow.test', 'TXT')), 'ETIMEOUT');
  assert.equal(await code(resolve(`${'a'.repeat(64)}.test`, 'TXT')), 'EBADNAME');
});

test('SPF over the adapter: temperror from a DNS failure, permerror from too many void lookups', async () => {
  const q = { ip: '192.0.2.1', helo: 'client.test', authservId: 'mx.tern.test', resolve };
  assert.equal((await checkSpf({ ...q, sender: 'a@host.test' })).status.result, 'pass');
  assert.equal((await checkSpf({ ...q, ip: '192.0.2.9', sender: 'a@host.test' })).status.result, 'fail');
  assert.equal((await checkSpf({ ...q, sender: 'a@spf-servfail.test' })).status.result, 'temperror');
  assert.equal((await checkSpf({ ...q, sender: 'a@fail.test' })).status.result, 'temperror');
  assert.equal((await checkSpf({ ...q, sender: 'a@nope.test' })).status.result, 'none');
  // RFC 7208 §4.6.4: a third lookup that finds nothing is one void lookup too many.
  assert.equal((await checkSpf({ ...q, ip: '192.0.2.9', sender: 'a@spf-void.test' })).status.result, 'permerror');
});
