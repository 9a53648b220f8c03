import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { formatAddress, isAddressLiteral, isDomain, literalIp, parseMailbox, parsePath, quoteLocal } from './address.ts';
import type { Address } from './address.ts';
import { SmtpError } from './reply.ts';

function addr(local: string, domain: string, extra: Partial<Address> = {}): Address {
  return { local, domain, literal: false, utf8: false, ...extra };
}

/** Assert that `fn` throws an SmtpError with this code (and enhanced code, if given). */
function throwsSmtp(fn: () => unknown, code: number, enhanced?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmtpError, `expected SmtpError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (enhanced !== undefined) assert.equal(e.enhanced, enhanced);
    return true;
  });
}

describe('parseMailbox: valid forms', () => {
  const valid: [string, Address][] = [
    ['user@example.com', addr('user', 'example.com')],
    ['first.last@sub.example.com', addr('first.last', 'sub.example.com')],
    ["o'hara+tag=x{1}@example.com", addr("o'hara+tag=x{1}", 'example.com')],
    ['User@EXAMPLE.Com', addr('User', 'example.com')],
    ['u@a-b.c-d.example', addr('u', 'a-b.c-d.example')],
    ['u@localhost', addr('u', 'localhost')],
    ['"john doe"@example.com', addr('john doe', 'example.com')],
    ['"a\\"b"@example.com', addr('a"b', 'example.com')],
    ['"a\\\\b"@example.com', addr('a\\b', 'example.com')],
    ['"a.."@example.com', addr('a..', 'example.com')],
    ['u@[192.0.2.1]', addr('u', '[192.0.2.1]', { literal: true })],
    ['u@[255.255.255.255]', addr('u', '[255.255.255.255]', { literal: true })],
    ['u@[IPv6:2001:db8::1]', addr('u', '[ipv6:2001:db8::1]', { literal: true })],
    ['u@[IPv6:::ffff:192.0.2.1]', addr('u', '[ipv6:::ffff:192.0.2.1]', { literal: true })],
    ['jösé@example.com', addr('jösé', 'example.com', { utf8: true })],
    ['u@bücher.example', addr('u', 'bücher.example', { utf8: true })],
    ['"jö sé"@example.com', addr('jö sé', 'example.com', { utf8: true })],
  ];
  for (const [input, want] of valid) {
    it(input, () => assert.deepEqual(parseMailbox(input), want));
  }
});

describe('parseMailbox: open-relay tricks', () => {
  it('"user%remote@local" is local part "user%remote" at "local"', () => {
    assert.deepEqual(parseMailbox('user%remote@local'), addr('user%remote', 'local'));
  });
  it('"remote!user@local" is local part "remote!user"', () => {
    assert.deepEqual(parseMailbox('remote!user@local'), addr('remote!user', 'local'));
  });
  it('a quoted "@" stays in the local part', () => {
    assert.deepEqual(parseMailbox('"user@remote"@local'), addr('user@remote', 'local'));
  });
  it('user@remote@local is refused', () => throwsSmtp(() => parseMailbox('user@remote@local'), 501));
  it('"a"@b@c is refused', () => throwsSmtp(() => parseMailbox('"a"@b@c'), 501));
  it('trailing dot in the domain is refused', () => throwsSmtp(() => parseMailbox('user@remote.'), 501, '5.1.2'));
  it('out-of-range IPv4 literal is refused', () => throwsSmtp(() => parseMailbox('user@[300.1.1.1]'), 501, '5.1.2'));
});

describe('parseMailbox: refused forms', () => {
  const bad: [string, string][] = [
    ['@example.com', 'empty local part'],
    ['userexample.com', 'no @'],
    ['user@', 'empty domain'],
    ['.user@example.com', 'leading dot'],
    ['user.@example.com', 'trailing dot in local part'],
    ['us..er@example.com', 'double dot'],
    ['us er@example.com', 'space'],
    ['us(er)@example.com', 'specials'],
    ['us"er"@example.com', 'quote inside a dot-string'],
    ['"unterminated@example.com', 'unterminated quote'],
    ['"a"b@example.com', 'text after the quoted string'],
    ['"a\x01"@example.com', 'control character in quotes'],
    ['"a\\\x01"@example.com', 'bad quoted pair'],
    ['user@.example.com', 'leading dot in domain'],
    ['user@exa..mple.com', 'empty label'],
    ['user@-example.com', 'label starts with hyphen'],
    ['user@example-.com', 'label ends with hyphen'],
    ['user@exa_mple.com', 'underscore'],
    ['user@[192.0.2.1', 'unclosed literal'],
    ['user@192.0.2.1]', 'unopened literal'],
    ['user@[192.0.2]', 'short IPv4'],
    ['user@[01.2.3.4]', 'leading zero'],
    ['user@[IPv6:1.2.3.4]', 'IPv4 in an IPv6 tag'],
    ['user@[IPv6:2001:db8::1%eth0]', 'zone id'],
    ['user@[IPv6:2001:db8:::1]', 'bad IPv6'],
    ['user@[tag:content]', 'general literal'],
    ['user@[]', 'empty literal'],
  ];
  for (const [input, why] of bad) {
    it(`${why}: ${JSON.stringify(input)}`, () => throwsSmtp(() => parseMailbox(input), 501));
  }

  it('local part limit is 64 octets', () => {
    assert.equal(parseMailbox('a'.repeat(64) + '@example.com').local.length, 64);
    throwsSmtp(() => parseMailbox('a'.repeat(65) + '@example.com'), 501, '5.1.3');
    // Octets, not characters: 32 two-octet characters are fine, 33 are not.
    assert.equal(parseMailbox('é'.repeat(32) + '@example.com').utf8, true);
    throwsSmtp(() => parseMailbox('é'.repeat(33) + '@example.com'), 501, '5.1.3');
  });

  it('domain limit is 255 octets', () => {
    const label = 'a'.repeat(63);
    const d255 = [label, label, label, 'b'.repeat(63)].join('.'); // 4*63+3 = 255
    assert.equal(d255.length, 255);
    assert.equal(parseMailbox('u@' + d255).domain, d255);
    throwsSmtp(() => parseMailbox('u@' + d255 + 'c'), 501, '5.1.2');
  });

  it('label limit is 63 octets', () => {
    assert.equal(parseMailbox(`u@${'a'.repeat(63)}.example`).domain, `${'a'.repeat(63)}.example`);
    throwsSmtp(() => parseMailbox(`u@${'a'.repeat(64)}.example`), 501, '5.1.2');
  });
});

describe('parsePath', () => {
  it('plain path, no parameters', () => {
    assert.deepEqual(parsePath('<user@example.com>', false), { address: addr('user', 'example.com'), rest: '' });
  });

  it('returns trailing parameters as rest', () => {
    assert.deepEqual(parsePath('<user@example.com> SIZE=100 BODY=8BITMIME', true), {
      address: addr('user', 'example.com'),
      rest: 'SIZE=100 BODY=8BITMIME',
    });
  });

  it('null path when allowed', () => {
    assert.deepEqual(parsePath('<>', true), { address: null, rest: '' });
    assert.deepEqual(parsePath('<> SIZE=10', true), { address: null, rest: 'SIZE=10' });
  });

  it('null path refused when not allowed', () => throwsSmtp(() => parsePath('<>', false), 501));

  it('source route is validated and ignored', () => {
    assert.deepEqual(parsePath('<@a.example,@b.example:user@c.example>', false), {
      address: addr('user', 'c.example'),
      rest: '',
    });
    assert.deepEqual(parsePath('<@a.example:user@c.example> NOTIFY=NEVER', false).address, addr('user', 'c.example'));
  });

  it('bad source routes are refused', () => {
    for (const p of ['<@a.example user@c.example>', '<@a.example,b.example:user@c.example>', '<@:user@c.example>', '<@a.example.:u@c.example>']) {
      throwsSmtp(() => parsePath(p, false), 501);
    }
  });

  it('a quoted local part may contain ">" and spaces', () => {
    assert.deepEqual(parsePath('<"a> b"@example.com> SIZE=1', false), { address: addr('a> b', 'example.com'), rest: 'SIZE=1' });
    assert.deepEqual(parsePath('<"a\\">"@example.com>', false).address, addr('a">', 'example.com'));
  });

  it('address literals', () => {
    assert.deepEqual(parsePath('<postmaster@[192.0.2.1]>', false).address, addr('postmaster', '[192.0.2.1]', { literal: true }));
    assert.deepEqual(
      parsePath('<postmaster@[IPv6:2001:db8::1]>', false).address,
      addr('postmaster', '[ipv6:2001:db8::1]', { literal: true }),
    );
  });

  it('open-relay tricks', () => {
    assert.deepEqual(parsePath('<user%remote@local>', false).address, addr('user%remote', 'local'));
    assert.deepEqual(parsePath('<remote!user@local>', false).address, addr('remote!user', 'local'));
    assert.deepEqual(parsePath('<"user@remote"@local>', false).address, addr('user@remote', 'local'));
    throwsSmtp(() => parsePath('<user@remote@local>', false), 501);
    throwsSmtp(() => parsePath('<user@remote.>', false), 501);
    throwsSmtp(() => parsePath('<user@[300.1.1.1]>', false), 501);
  });

  it('UTF-8 sets the flag; the domain is lower-cased', () => {
    assert.deepEqual(parsePath('<Jösé@Exämple.ORG>', false).address, addr('Jösé', 'exämple.org', { utf8: true }));
  });

  it('brackets are required and must balance', () => {
    const bad = [
      'user@example.com',
      'user@example.com>',
      '<user@example.com',
      '<<user@example.com>>',
      '<user@example.com>>',
      '<user@<example.com>',
      '<user@example.com>SIZE=1',
      '',
      ' <user@example.com>',
    ];
    for (const p of bad) throwsSmtp(() => parsePath(p, true), 501);
  });

  it('empty local part', () => {
    throwsSmtp(() => parsePath('<@example.com>', false), 501);
  });

  it('path limit is 256 octets including the brackets', () => {
    const label = 'a'.repeat(60);
    // local 10 + "@" + domain: make the whole path exactly 256, then 257.
    const domainLen = 256 - 2 - 11;
    const domain = [label, label, label, 'b'.repeat(domainLen - 3 * 61)].join('.');
    assert.equal(domain.length, domainLen);
    const ok = `<${'u'.repeat(10)}@${domain}>`;
    assert.equal(ok.length, 256);
    assert.equal(parsePath(ok, false).address?.domain, domain);
    const over = `<${'u'.repeat(11)}@${domain}>`;
    throwsSmtp(() => parsePath(over, false), 501, '5.1.3');
  });
});

describe('address helpers', () => {
  it('formatAddress quotes only when needed', () => {
    assert.equal(formatAddress(null), '');
    assert.equal(formatAddress(addr('user', 'example.com')), 'user@example.com');
    assert.equal(formatAddress(addr('john doe', 'example.com')), '"john doe"@example.com');
    assert.equal(formatAddress(addr('a"b\\c', 'example.com')), '"a\\"b\\\\c"@example.com');
    assert.equal(formatAddress(addr('a..b', 'example.com')), '"a..b"@example.com');
    assert.equal(quoteLocal(''), '""');
  });

  it('formatAddress and parseMailbox round-trip', () => {
    for (const local of ['user', 'first.last', 'john doe', 'a"b', 'a\\b', 'user@remote', '.x', 'jösé', '']) {
      const a = addr(local, 'example.com', { utf8: /[^\x00-\x7f]/.test(local) });
      assert.deepEqual(parseMailbox(formatAddress(a)), a, local);
    }
  });

  it('isDomain / isAddressLiteral / literalIp', () => {
    assert.equal(isDomain('example.com'), true);
    assert.equal(isDomain(''), false);
    assert.equal(isDomain('example.com.'), false);
    assert.equal(isAddressLiteral('[192.0.2.1]'), true);
    assert.equal(isAddressLiteral('[ipv6:::1]'), true);
    assert.equal(isAddressLiteral('192.0.2.1'), false);
    assert.equal(literalIp('[192.0.2.1]'), '192.0.2.1');
    assert.equal(literalIp('[IPv6:2001:db8::1]'), '2001:db8::1');
    assert.equal(literalIp('[ipv6:::1]'), '::1');
  });
});
