import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DnsblCheck, dnsblQueryName, isListingAnswer } from './dnsbl.ts';
import { DnsError } from '../dns/resolver.ts';
import { SmtpError } from '../smtp/reply.ts';
import { silentLogger } from '../util/log.ts';
import type { SessionInfo } from './policy.ts';

const session = (ip: string, extra: Partial<SessionInfo> = {}): SessionInfo =>
  ({ id: 'c1', remoteAddress: ip, remotePort: 1, localPort: 25, role: 'smtp', tls: false, ...extra });

/** A resolver answering A queries from a table; names not in it are NXDOMAIN; 'SERVFAIL' throws a temporary error. */
function fakeResolver(table: Record<string, string[] | 'SERVFAIL'>) {
  const queries: string[] = [];
  return {
    queries,
    a: async (name: string): Promise<string[]> => {
      queries.push(name);
      const v = table[name];
      if (v === 'SERVFAIL') throw new DnsError('SERVFAIL', true, `DNS A lookup for ${name} failed: SERVFAIL`);
      if (!v) throw new DnsError('NXDOMAIN', false, `DNS A lookup for ${name} failed: NXDOMAIN`);
      return v;
    },
  };
}

describe('DNSBL query names (RFC 5782 §2.1, §2.4)', () => {
  it('IPv4: reversed octets', () => {
    assert.equal(dnsblQueryName('192.0.2.99', 'bl.test'), '99.2.0.192.bl.test');
    assert.equal(dnsblQueryName('::ffff:192.0.2.99', 'bl.test'), '99.2.0.192.bl.test');
  });
  it('IPv6: 32 reversed nibbles', () => {
    assert.equal(
      dnsblQueryName('2001:db8:1:2:3:4:567:89ab', 'bl.test'),
      'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test',
    );
    assert.equal(dnsblQueryName('::1', 'bl.test'), `1.${'0.'.repeat(31)}bl.test`);
  });
  it('not an address: nothing to look up', () => {
    assert.equal(dnsblQueryName('', 'bl.test'), undefined);
  });
  it('127.0.0.0/8 is a listing, except the 127.255.255.x "query refused" codes', () => {
    assert.equal(isListingAnswer('127.0.0.2'), true);
    assert.equal(isListingAnswer('127.0.0.11'), true);
    assert.equal(isListingAnswer('127.255.255.254'), false);
    assert.equal(isListingAnswer('192.0.2.1'), false);
  });
});

describe('DnsblCheck', () => {
  const table = { '2.2.0.192.zen.test': ['127.0.0.2'], '3.2.0.192.other.test': ['127.0.0.4'], '4.2.0.192.zen.test': 'SERVFAIL' as const };

  it('a listed client is refused with 554 5.7.1 naming the zone; the first listing zone in order wins', async () => {
    const r = fakeResolver(table);
    const c = new DnsblCheck({ zones: ['zen.test', 'other.test'], cacheTtl: 60_000, resolver: r, log: silentLogger, isTrusted: () => false });
    await assert.rejects(c.connect(session('192.0.2.2')), (e: unknown) => {
      assert.ok(e instanceof SmtpError);
      assert.equal(e.code, 554);
      assert.equal(e.enhanced, '5.7.1');
      assert.equal(e.text, 'Service unavailable; client [192.0.2.2] blocked using zen.test');
      return true;
    });
    await assert.rejects(c.connect(session('192.0.2.3')), /blocked using other\.test/);
  });

  it('not listed (NXDOMAIN) passes; a DNS failure passes too and is not cached', async () => {
    let now = 0;
    const r = fakeResolver(table);
    const c = new DnsblCheck({ zones: ['zen.test'], cacheTtl: 60_000, resolver: r, log: silentLogger, isTrusted: () => false, now: () => now });
    await c.connect(session('192.0.2.9'));
    await c.connect(session('192.0.2.4'));
    await c.connect(session('192.0.2.4'));
    assert.deepEqual(r.queries, ['9.2.0.192.zen.test', '4.2.0.192.zen.test', '4.2.0.192.zen.test']);
    await c.connect(session('192.0.2.9'));
    assert.equal(r.queries.length, 3, 'the negative answer was cached');
    now += 60_001;
    await c.connect(session('192.0.2.9'));
    assert.equal(r.queries.length, 4, 'and expired');
  });

  it('positive answers are cached; the cache is bounded', async () => {
    const r = fakeResolver(table);
    const c = new DnsblCheck({ zones: ['zen.test'], cacheTtl: 60_000, resolver: r, log: silentLogger, isTrusted: () => false, maxCache: 2 });
    await assert.rejects(c.connect(session('192.0.2.2')));
    await assert.rejects(c.connect(session('192.0.2.2')));
    assert.equal(r.queries.length, 1);
    await c.connect(session('192.0.2.10'));
    await c.connect(session('192.0.2.11')); // pushes 192.0.2.2 out
    await assert.rejects(c.connect(session('192.0.2.2')));
    assert.equal(r.queries.length, 4);
  });

  it('trusted networks and other listeners are never looked up', async () => {
    const r = fakeResolver(table);
    const c = new DnsblCheck({ zones: ['zen.test'], cacheTtl: 60_000, resolver: r, log: silentLogger, isTrusted: (ip) => ip === '192.0.2.2' });
    await c.connect(session('192.0.2.2'));
    await c.connect(session('192.0.2.3', { role: 'submission' }));
    assert.deepEqual(r.queries, []);
  });
});
