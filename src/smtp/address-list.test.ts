import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddressList } from './address-list.ts';

/** The mailbox addresses of a value, or the error text. */
function addresses(value: string): string[] | string {
  const r = parseAddressList(value);
  return r.ok ? r.mailboxes.map((m) => m.address) : `error: ${r.error}`;
}

test('address lists: every mailbox, however it is written (RFC 5322 §3.4, RFC 6854 groups)', () => {
  const table: [string, string[]][] = [
    ['alice@tern.test', ['alice@tern.test']],
    ['  Alice@Tern.TEST  ', ['Alice@tern.test']],
    ['<alice@tern.test>', ['alice@tern.test']],
    ['Alice <alice@tern.test>', ['alice@tern.test']],
    ['"Alice, Example" <Alice@Tern.test>, bob@x.test (Bob)', ['Alice@tern.test', 'bob@x.test']],
    ['team: a@x.test, <b@y.test>;', ['a@x.test', 'b@y.test']],
    // A quoted display name hides specials, angle brackets and addresses.
    ['"Bob <bob@evil.test>, x" <alice@tern.test>', ['alice@tern.test']],
    ['"Alice <alice@tern.test>" <bob@evil.test>', ['bob@evil.test']],
    ['"a \\" <bob@evil.test> \\\\" <alice@tern.test>', ['alice@tern.test']],
    // Comments, nested and with quoted-pairs, are not addresses; what they hide still is.
    ['(a (b) <alice@tern.test>) bob@evil.test', ['bob@evil.test']],
    ['alice@tern.test (") , bob@evil.test (")', ['alice@tern.test', 'bob@evil.test']],
    ['alice@tern.test (\\) <x@y.test>), bob@evil.test', ['alice@tern.test', 'bob@evil.test']],
    ['Alice (the (real) one) <alice@tern.test> (work)', ['alice@tern.test']],
    ['(c)alice(c)@(c)tern(c).(c)test(c)', ['alice@tern.test']],
    // Groups (RFC 6854 allows them in From:): their mailboxes count, an empty group has none.
    ['undisclosed-recipients:;', []],
    ['friends: alice@tern.test, Bob <bob@evil.test>;, carol@tern.test', ['alice@tern.test', 'bob@evil.test', 'carol@tern.test']],
    ['"a: b" : alice@tern.test;', ['alice@tern.test']],
    ['g: ;, h:,,;', []],
    // Obsolete forms (§4.4) real mail carries.
    ['John Q. Public <jqp@tern.test>', ['jqp@tern.test']],
    ['john . q . public @ tern . test', ['john.q.public@tern.test']],
    ['"john".q@tern.test', ['john.q@tern.test']],
    ['<@relay.test,@other.test:alice@tern.test>', ['alice@tern.test']],
    ['<@evil.test:alice@tern.test>, <@tern.test:bob@evil.test>', ['alice@tern.test', 'bob@evil.test']],
    [',alice@tern.test,,bob@x.test,', ['alice@tern.test', 'bob@x.test']],
    ['alice@[192.0.2.1]', ['alice@[192.0.2.1]']],
    // A quoted local part is the same address when dot-atom can carry it; kept quoted when not.
    ['"alice"@tern.test', ['alice@tern.test']],
    ['"alice smith"@tern.test', ['"alice smith"@tern.test']],
    ['"a@b"@tern.test', ['"a@b"@tern.test']],
    // Encoded words (RFC 2047) are atoms here: left as display names.
    ['=?utf-8?q?Bob_Smith?= <alice@tern.test>', ['alice@tern.test']],
    // UTF-8 (RFC 6532).
    ['Jörg <jörg@bücher.test>', ['jörg@bücher.test']],
    ['', []],
  ];
  for (const [value, want] of table) assert.deepEqual(addresses(value), want, value);
});

test('address lists: what cannot be read for sure is an error, never a guess', () => {
  const table = [
    'bob',
    '<>',
    'Bob',
    'bob@x.test <alice@tern.test>',
    'alice@tern.test bob@evil.test',
    'alice@tern.test; bob@evil.test',
    'Alice <alice@tern.test',
    'Alice alice@tern.test',
    '"unterminated <alice@tern.test>',
    '(unterminated <alice@tern.test>',
    'alice@tern.test)',
    'a: b: c@x.test;;',
    'team: alice@tern.test',
    ': alice@tern.test;',
    'alice@',
    '@tern.test',
    'alice@tern..test',
    'alice@tern.test.',
    '.alice@tern.test',
    'alice.@tern.test',
    'a..b@tern.test',
    'alice@[1.2.3.4',
    'alice@[1.[2].3]',
    'alice@"tern.test"',
    '<alice@tern.test> <bob@evil.test>',
    '<alice@tern.test>>',
    'Alice <alice@tern.test> bob@evil.test',
    '=?utf-8?q?Bob_<bob@evil.test>?= <alice@tern.test>',
    'alice\0@tern.test',
    'a\\b@tern.test',
    '<@relay.test alice@tern.test>',
    '. <alice@tern.test>',
  ];
  for (const value of table) assert.match(String(addresses(value)), /^error: /, value);
  const r = parseAddressList('Alice <alice@tern.test');
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.offset, 'Alice <alice@tern.test'.length);
});

test('address lists: display names, groups and the decoded local part', () => {
  const r = parseAddressList('"Smith, J\\"ay\\"" (x) <j@tern.test>, Team One: "a b"@tern.test;');
  assert.ok(r.ok);
  assert.deepEqual(r.mailboxes, [
    { address: 'j@tern.test', local: 'j', domain: 'tern.test', name: 'Smith, J"ay"' },
    { address: '"a b"@tern.test', local: 'a b', domain: 'tern.test', name: '', group: 'Team One' },
  ]);
});

test('error texts are printable ASCII (they reach SMTP replies)', () => {
  for (const value of ['a\x00@b', 'x\x1b[0m <a@b>', 'é)', ')\r\n']) {
    const r = parseAddressList(value);
    assert.equal(r.ok, false, JSON.stringify(value));
    if (!r.ok) assert.match(r.error, /^[\x20-\x7e]+$/, JSON.stringify(value));
  }
});

// ---------------------------------------------------------------- properties

/** A small deterministic PRNG (mulberry32), so a failure can be replayed from its seed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('property: a list rendered from random mailboxes, names, comments and groups parses back to exactly its mailboxes', () => {
  const r = rng(5322);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const NASTY = ['<', '>', '@', ',', ';', ':', '.', '(', ')', '"', '\\', ' ', 'x', 'bob@evil.test'];
  const text = (n: number): string => Array.from({ length: n }, () => pick(NASTY)).join('');
  const quote = (s: string): string => `"${s.replace(/(["\\])/g, '\\$1')}"`;
  const comment = (s: string): string => `(${s.replace(/([()\\])/g, '\\$1')}${r() < 0.3 ? ' (nested)' : ''})`;
  const cfws = (): string => (r() < 0.3 ? ` ${comment(text(4))} ` : r() < 0.5 ? ' ' : '');
  for (let round = 0; round < 2000; round++) {
    const want: string[] = [];
    const parts: string[] = [];
    const mailbox = (): string => {
      const local = pick(['alice', 'bob', 'a.b', 'x+tag']);
      const domain = pick(['tern.test', 'evil.test', 'sub.tern.test']);
      want.push(`${local}@${domain}`);
      const spec = `${local}@${domain}`;
      switch (Math.floor(r() * 3)) {
        case 0:
          return cfws() + spec + cfws();
        case 1:
          return `${cfws()}<${spec}>${cfws()}`;
        default:
          return `${r() < 0.5 ? quote(text(6)) : 'Some Name'}${cfws()}<${spec}>${cfws()}`;
      }
    };
    const n = 1 + Math.floor(r() * 4);
    for (let i = 0; i < n; i++) {
      if (r() < 0.25) {
        const members = Array.from({ length: Math.floor(r() * 3) }, mailbox);
        parts.push(`${quote(text(5))}:${members.join(',')};${cfws()}`);
      } else {
        parts.push(mailbox());
      }
    }
    const value = parts.join(',');
    assert.deepEqual(addresses(value), want, `round ${round}: ${value}`);
  }
});

test('property: random input never throws; an error points inside the input; a mailbox always has a local part and a domain', () => {
  const r = rng(6409);
  const ALPHABET = ['<', '>', '@', ',', ';', ':', '.', '(', ')', '"', '\\', '[', ']', ' ', '\t', 'a', 'b', 'x.test', '\0', 'é', '\r\n '];
  for (let round = 0; round < 20000; round++) {
    const value = Array.from({ length: Math.floor(r() * 24) }, () => ALPHABET[Math.floor(r() * ALPHABET.length)]).join('');
    const res = parseAddressList(value);
    if (!res.ok) {
      assert.ok(res.offset >= 0 && res.offset <= value.length, value);
      continue;
    }
    for (const m of res.mailboxes) {
      assert.ok(m.domain.length > 0 && m.local.length > 0, value);
      assert.equal(m.address.lastIndexOf('@'), m.address.length - m.domain.length - 1, value);
    }
  }
});

test("large input: a 20,000-mailbox list, 200,000 nested comments (no recursion to overflow), issue 11's padding", () => {
  const big = Array.from({ length: 20_000 }, (_, i) => `u${i}@tern.test`).join(', ');
  const r = parseAddressList(big);
  assert.ok(r.ok);
  assert.equal(r.mailboxes.length, 20_000);
  assert.equal(r.mailboxes[19_999]!.address, 'u19999@tern.test');
  const deep = '('.repeat(200_000) + ')'.repeat(200_000) + ' alice@tern.test';
  assert.deepEqual(addresses(deep), ['alice@tern.test']);
  // Issue 11's bypass value: 2,100 empty folded list elements (obs-addr-list), then a second mailbox: both read.
  assert.deepEqual(addresses('k0@tern.test' + ',\r\n '.repeat(2100) + 'Bob <bob@evil.test>'), ['k0@tern.test', 'bob@evil.test']);
});
