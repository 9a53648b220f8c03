import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { resolveMx, isNullMx, type Routing } from './mx.ts';
import { createResolver, type Resolver } from '../dns/resolver.ts';
import { startDnsServer, type DnsServer, type Zone } from '../../test/helpers/dns-server.ts';

let dns: DnsServer;
let resolver: Resolver;

const many: Zone = {};
for (let i = 1; i <= 15; i++) many[`m${i}.test`] = { A: [`192.0.2.${100 + i}`] };

before(async () => {
  dns = await startDnsServer({
    ...many,
    'many.test': { MX: Array.from({ length: 15 }, (_, i) => ({ preference: i + 1, exchange: `m${i + 1}.test` })) },
    'a.test': { A: ['192.0.2.1'] },
    'b.test': { A: ['192.0.2.2'], AAAA: ['2001:db8::2'] },
    'c.test': { A: ['192.0.2.3'] },
    'd.test': { A: ['192.0.2.4'] },
    'v6only.test': { AAAA: ['2001:db8::6'] },
    'alias.test': { CNAME: 'real.test' },
    'real.test': { A: ['192.0.2.50'] },
    'noaddr.test': { TXT: ['no addresses here'] },
    'sfhost.test': { SERVFAIL: true },
    'sfhost2.test': { SERVFAIL: true },
    'pref.test': { MX: [{ preference: 30, exchange: 'c.test' }, { preference: 10, exchange: 'A.test.' }, { preference: 20, exchange: 'b.test' }] },
    'equal.test': { MX: [{ preference: 20, exchange: 'd.test' }, { preference: 10, exchange: 'a.test' }, { preference: 10, exchange: 'b.test' }, { preference: 10, exchange: 'c.test' }] },
    'implicit.test': { A: ['192.0.2.20'], AAAA: ['2001:db8::20'] },
    'implicit6.test': { AAAA: ['2001:db8::21'] },
    'nomx.test': { TXT: ['v=spf1 -all'] },
    'null.test': { MX: [{ preference: 0, exchange: '.' }] },
    'rootplus.test': { MX: [{ preference: 0, exchange: '.' }, { preference: 10, exchange: 'a.test' }] },
    'fail.test': { SERVFAIL: true },
    'slow.test': { TIMEOUT: true },
    'cname-mx.test': { MX: [{ preference: 10, exchange: 'alias.test' }] },
    'v6.test': { MX: [{ preference: 10, exchange: 'v6only.test' }] },
    'skip.test': { MX: [{ preference: 10, exchange: 'noaddr.test' }, { preference: 20, exchange: 'gone.test' }, { preference: 30, exchange: 'c.test' }] },
    'broken.test': { MX: [{ preference: 10, exchange: 'noaddr.test' }, { preference: 20, exchange: 'gone.test' }] },
    'tempall.test': { MX: [{ preference: 10, exchange: 'sfhost.test' }, { preference: 20, exchange: 'sfhost2.test' }] },
    'tempsome.test': { MX: [{ preference: 10, exchange: 'sfhost.test' }, { preference: 20, exchange: 'c.test' }] },
    'tempmixed.test': { MX: [{ preference: 10, exchange: 'sfhost.test' }, { preference: 20, exchange: 'noaddr.test' }] },
    'dup.test': { MX: [{ preference: 10, exchange: 'a.test' }, { preference: 20, exchange: 'a.test' }, { preference: 30, exchange: 'same.test' }] },
    'same.test': { A: ['192.0.2.1', '192.0.2.99'] },
    'ipmx.test': { MX: [{ preference: 10, exchange: '192.0.2.7' }, { preference: 20, exchange: 'c.test' }] },
  });
  resolver = createResolver({ servers: [dns.address], timeout: 300 });
});
after(() => dns.close());

/** Deterministic random in [0, 1) (mulberry32). */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hosts(r: Routing): string[] {
  assert.equal(r.kind, 'hosts', JSON.stringify(r));
  return r.kind === 'hosts' ? r.hosts.map((h) => `${h.preference} ${h.name} ${h.addresses.join(',')}`) : [];
}
function failure(r: Routing): string {
  assert.equal(r.kind, 'fail', JSON.stringify(r));
  return r.kind === 'fail' ? `${r.temporary ? 'temp' : 'perm'} ${r.enhanced}` : '';
}

test('MX hosts in preference order, each with IPv4 then IPv6 addresses', async () => {
  const r = await resolveMx('PREF.test.', resolver);
  assert.deepEqual(hosts(r), ['10 a.test 192.0.2.1', '20 b.test 192.0.2.2,2001:db8::2', '30 c.test 192.0.2.3']);
  assert.equal(r.kind === 'hosts' && r.implicit, false);
});

test('equal preferences are randomised, reproducibly with a seeded random', async () => {
  const first = new Set<string>();
  for (let seed = 1; seed <= 50; seed++) {
    const names = hosts(await resolveMx('equal.test', resolver, { random: seeded(seed) })).map((h) => h.split(' ')[1]);
    assert.deepEqual([...names].slice(0, 3).sort(), ['a.test', 'b.test', 'c.test']);
    assert.equal(names[3], 'd.test');
    first.add(names[0]!);
    assert.deepEqual(hosts(await resolveMx('equal.test', resolver, { random: seeded(seed) })).map((h) => h.split(' ')[1]), names);
  }
  assert.equal(first.size, 3);
});

test('the MX list is capped', async () => {
  const ten = hosts(await resolveMx('many.test', resolver));
  assert.equal(ten.length, 10);
  assert.equal(ten[9], '10 m10.test 192.0.2.110');
  assert.deepEqual(hosts(await resolveMx('many.test', resolver, { maxHosts: 2 })), ['1 m1.test 192.0.2.101', '2 m2.test 192.0.2.102']);
  // Hosts past the cap are not even looked up.
  assert.ok(!dns.queries.some((q) => q.name === 'm15.test'));
});

test('no MX: the domain itself is the implicit MX', async () => {
  const r = await resolveMx('implicit.test', resolver);
  assert.deepEqual(hosts(r), ['0 implicit.test 192.0.2.20,2001:db8::20']);
  assert.equal(r.kind === 'hosts' && r.implicit, true);
  assert.deepEqual(hosts(await resolveMx('implicit6.test', resolver)), ['0 implicit6.test 2001:db8::21']);
  assert.equal(failure(await resolveMx('nomx.test', resolver)), 'perm 5.1.2');
});

test('null MX is a permanent 5.1.10; a root exchange beside others is ignored', async () => {
  const r = await resolveMx('null.test', resolver);
  assert.equal(failure(r), 'perm 5.1.10');
  assert.match(r.kind === 'fail' ? r.reason : '', /does not accept mail/);
  assert.deepEqual(hosts(await resolveMx('rootplus.test', resolver)), ['10 a.test 192.0.2.1']);
  assert.equal(isNullMx([{ exchange: '' }]), true);
  assert.equal(isNullMx([{ exchange: '.' }]), true);
  assert.equal(isNullMx([{ exchange: '.' }, { exchange: 'a.test' }]), false);
  assert.equal(isNullMx([]), false);
});

test('NXDOMAIN is permanent, SERVFAIL and timeout temporary', async () => {
  assert.equal(failure(await resolveMx('nope.test', resolver)), 'perm 5.1.2');
  assert.equal(failure(await resolveMx('fail.test', resolver)), 'temp 4.4.3');
  assert.equal(failure(await resolveMx('slow.test', resolver)), 'temp 4.4.3');
});

test('an MX host behind a CNAME, and an IPv6-only host', async () => {
  assert.deepEqual(hosts(await resolveMx('cname-mx.test', resolver)), ['10 alias.test 192.0.2.50']);
  assert.deepEqual(hosts(await resolveMx('v6.test', resolver)), ['10 v6only.test 2001:db8::6']);
});

test('address literals route straight to the address', async () => {
  const before = dns.queries.length;
  const r = await resolveMx('[192.0.2.1]', resolver);
  assert.deepEqual(hosts(r), ['0 192.0.2.1 192.0.2.1']);
  assert.equal(r.kind === 'hosts' && r.implicit, true);
  assert.deepEqual(hosts(await resolveMx('[IPv6:2001:DB8::1]', resolver)), ['0 2001:DB8::1 2001:DB8::1']);
  assert.equal(dns.queries.length, before);
  for (const bad of ['[999.0.0.1]', '[2001:db8::1]', '[IPv6:192.0.2.1x]', '[x-tag:abc]', '[192.0.2.1']) {
    assert.equal(failure(await resolveMx(bad, resolver)), 'perm 5.1.2', bad);
  }
});

test('MX hosts without addresses are skipped; none left is a temporary 4.4.4', async () => {
  assert.deepEqual(hosts(await resolveMx('skip.test', resolver)), ['30 c.test 192.0.2.3']);
  assert.equal(failure(await resolveMx('broken.test', resolver)), 'temp 4.4.4');
  // An MX that names an IP address is looked up as a name, finds nothing and is skipped.
  assert.deepEqual(hosts(await resolveMx('ipmx.test', resolver)), ['20 c.test 192.0.2.3']);
});

test('hosts failing temporarily are left out; all failing is a temporary 4.4.3', async () => {
  assert.deepEqual(hosts(await resolveMx('tempsome.test', resolver)), ['20 c.test 192.0.2.3']);
  assert.equal(failure(await resolveMx('tempall.test', resolver)), 'temp 4.4.3');
  assert.equal(failure(await resolveMx('tempmixed.test', resolver)), 'temp 4.4.3');
});

test('a repeated exchange and repeated addresses are tried once', async () => {
  assert.deepEqual(hosts(await resolveMx('dup.test', resolver)), ['10 a.test 192.0.2.1', '30 same.test 192.0.2.99']);
});
