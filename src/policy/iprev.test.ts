// iprev (RFC 8601 §3): reverse DNS confirmed forward, against the test DNS server.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkIprev, reverseName } from './iprev.ts';
import { createResolver } from '../dns/resolver.ts';
import { mailauthResolver, type DnsResolve } from '../dns/mailauth-resolver.ts';
import { startDnsServer, type DnsServer } from '../../test/helpers/dns-server.ts';

let dns: DnsServer;
let resolve: DnsResolve;

before(async () => {
  dns = await startDnsServer({
    [reverseName('192.0.2.1')]: { PTR: ['other.test', 'mail.test'] },
    'mail.test': { A: ['192.0.2.1'] },
    'other.test': { A: ['192.0.2.77'] },
    [reverseName('192.0.2.2')]: { PTR: ['liar.test'] },
    'liar.test': { A: ['192.0.2.99'] },
    [reverseName('192.0.2.3')]: { PTR: ['gone.test'] },
    [reverseName('192.0.2.4')]: { SERVFAIL: true },
    [reverseName('192.0.2.5')]: { PTR: ['broken.test'] },
    'broken.test': { SERVFAIL: true },
    [reverseName('2001:db8::25')]: { PTR: ['v6.test'] },
    'v6.test': { AAAA: ['2001:db8:0:0::25'] },
  });
  resolve = mailauthResolver(createResolver({ servers: [dns.address], timeout: 300 }));
});
after(() => dns.close());

test('reverse names (RFC 3596 §2.5 for IPv6)', () => {
  assert.equal(reverseName('192.0.2.1'), '1.2.0.192.in-addr.arpa');
  assert.equal(reverseName('2001:db8::25'), '5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
});

test('iprev results', async () => {
  assert.deepEqual(await checkIprev('192.0.2.1', resolve), { result: 'pass', ip: '192.0.2.1', names: ['mail.test'] });
  assert.deepEqual(await checkIprev('192.0.2.2', resolve), { result: 'fail', ip: '192.0.2.2', names: ['liar.test'] });
  assert.equal((await checkIprev('192.0.2.3', resolve)).result, 'fail', 'the PTR name does not exist');
  assert.equal((await checkIprev('192.0.2.9', resolve)).result, 'permerror', 'no PTR at all');
  assert.equal((await checkIprev('192.0.2.4', resolve)).result, 'temperror');
  assert.equal((await checkIprev('192.0.2.5', resolve)).result, 'temperror');
  assert.equal((await checkIprev('2001:db8::25', resolve)).result, 'pass');
});
