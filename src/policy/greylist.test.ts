import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GreylistCheck } from './greylist.ts';
import { clientNetwork } from './ip.ts';
import { Directory } from './directory.ts';
import { openStore, type GreylistStore } from '../store/store.ts';
import { parsePath, type Address } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import { silentLogger } from '../util/log.ts';
import type { SessionInfo } from './policy.ts';

const MIN = 60_000;
const DAY = 24 * 60 * MIN;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-greylist-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

const session = (ip: string, extra: Partial<SessionInfo> = {}): SessionInfo =>
  ({ id: 'c1', remoteAddress: ip, remotePort: 1, localPort: 25, role: 'smtp', tls: false, ...extra });
const addr = (s: string): Address => parsePath(`<${s}>`, false).address!;
const directory = new Directory([{ name: 'tern.test', mailboxes: ['alice', 'bob'], aliases: {} }]);

function setup(opts: { directory?: Directory } = {}) {
  const clock = { now: 1_000_000 };
  const store = openStore(path.join(root, `d${n++}`));
  after(() => store.close());
  const check = new GreylistCheck({
    store, delay: 5 * MIN, expire: 2 * DAY, keep: 36 * DAY, isTrusted: (ip) => ip.startsWith('10.'), log: silentLogger, now: () => clock.now, ...opts,
  });
  const attempt = (ip: string, from: string | null, to: string, extra: Partial<SessionInfo> = {}): 'pass' | 'greylisted' => {
    try {
      check.rcpt(session(ip, extra), addr(to), {}, from === null ? null : addr(from));
      return 'pass';
    } catch (e) {
      assert.ok(e instanceof SmtpError);
      assert.equal(`${e.code} ${e.enhanced} ${e.text}`, '450 4.7.1 Greylisted, please try again later');
      return 'greylisted';
    }
  };
  return { clock, store, attempt };
}

describe('clientNetwork', () => {
  it('IPv4 /24, IPv6 /64', () => {
    assert.equal(clientNetwork('192.0.2.77'), '192.0.2.0/24');
    assert.equal(clientNetwork('::ffff:192.0.2.77'), '192.0.2.0/24');
    assert.equal(clientNetwork('2001:db8:0:7:1::2'), '2001:db8:0:7::/64');
  });
});

describe('GreylistCheck', () => {
  it('first attempt 450; too early 450; after the delay it passes; then the triplet is known', () => {
    const { clock, attempt } = setup();
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted');
    clock.now += 4 * MIN;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted', 'retry too early');
    clock.now += 1 * MIN;
    // From another host of the same /24, as big senders do.
    assert.equal(attempt('192.0.2.200', 'a@x.test', 'alice@tern.test'), 'pass');
    clock.now += 10 * DAY;
    assert.equal(attempt('192.0.2.1', 'A@X.test', 'Alice@tern.test'), 'pass', 'known; addresses compared without case');
    // A different triplet is new.
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'bob@tern.test'), 'greylisted');
    assert.equal(attempt('192.0.2.1', null, 'alice@tern.test'), 'greylisted', 'the null sender is a sender of its own');
    assert.equal(attempt('198.51.100.1', 'a@x.test', 'alice@tern.test'), 'greylisted', 'another network');
  });

  it('a retry after `expire` starts over; a known triplet unused for `keep` is forgotten', () => {
    const { clock, attempt } = setup();
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted');
    clock.now += 3 * DAY;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted', 'too late: a new round');
    clock.now += 6 * MIN;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'pass');
    clock.now += 35 * DAY;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'pass', 'still known (and renewed)');
    clock.now += 35 * DAY;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'pass', 'renewed at the last pass');
    clock.now += 37 * DAY;
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted', 'forgotten after keep');
  });

  it('the state is in the store (it survives a restart) and expired entries are swept', () => {
    const { clock, store, attempt } = setup();
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test'), 'greylisted');
    const again = new GreylistCheck({
      store, delay: 5 * MIN, expire: 2 * DAY, keep: 36 * DAY, isTrusted: () => false, log: silentLogger, now: () => clock.now + 6 * MIN,
    });
    again.rcpt(session('192.0.2.1'), addr('alice@tern.test'), {}, addr('a@x.test'));
    const key = '192.0.2.0/24 <a@x.test> <alice@tern.test>';
    assert.notEqual(store.getGreylist(key)?.passedAt, null);
    clock.now += 100 * DAY;
    assert.equal(attempt('198.51.100.1', 'b@x.test', 'alice@tern.test'), 'greylisted'); // sweeps first
    assert.equal(store.getGreylist(key), null);
  });

  it('trusted networks, authenticated users and other listeners skip it', () => {
    const { attempt } = setup();
    assert.equal(attempt('10.1.2.3', 'a@x.test', 'alice@tern.test'), 'pass');
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test', { user: 'alice@tern.test' }), 'pass');
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'alice@tern.test', { role: 'submission' }), 'pass');
  });

  it('with a directory, only recipients that exist here are greylisted', () => {
    const { attempt } = setup({ directory });
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'nobody@tern.test'), 'pass', 'left to the recipient check (550)');
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'someone@remote.test'), 'pass', 'left to relay control (554)');
    assert.equal(attempt('192.0.2.1', 'a@x.test', 'bob@tern.test'), 'greylisted');
  });

  it('a failing store lets mail in', () => {
    const broken: GreylistStore = {
      getGreylist: () => { throw new Error('database is locked'); },
      putGreylist: () => {},
      expireGreylist: () => 0,
    };
    const c = new GreylistCheck({ store: broken, delay: 1, expire: 2, keep: 3, isTrusted: () => false, log: silentLogger });
    c.rcpt(session('192.0.2.1'), addr('alice@tern.test'), {}, addr('a@x.test'));
  });
});
