import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createMechanism, MECHANISMS, type SaslMechanism, type SaslStep } from './sasl.ts';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const mech = (name: string): SaslMechanism => createMechanism(name)!;
const creds = (user: string, password: string, authzid?: string): SaslStep =>
  authzid === undefined ? { kind: 'credentials', user, password } : { kind: 'credentials', user, password, authzid };
const err = (code: number, enhanced: string): { kind: string; code: number; enhanced: string } => ({ kind: 'error', code, enhanced });
const pick = (s: SaslStep): unknown => (s.kind === 'error' ? { kind: s.kind, code: s.code, enhanced: s.enhanced } : s);

describe('createMechanism', () => {
  it('knows PLAIN and LOGIN, case-insensitively, and nothing else', () => {
    assert.deepEqual(MECHANISMS, ['PLAIN', 'LOGIN']);
    assert.ok(createMechanism('plain'));
    assert.ok(createMechanism('Login'));
    assert.equal(createMechanism('CRAM-MD5'), null);
  });
});

describe('PLAIN (RFC 4616)', () => {
  it('initial response', () => {
    assert.deepEqual(mech('PLAIN').start(b64('\0alice@tern.test\0s3cret')), creds('alice@tern.test', 's3cret'));
  });
  it('empty challenge, then the response', () => {
    const m = mech('PLAIN');
    assert.deepEqual(m.start(undefined), { kind: 'challenge', challenge: '' });
    assert.deepEqual(m.step(b64('\0alice@tern.test\0pässwörd')), creds('alice@tern.test', 'pässwörd'));
    assert.deepEqual(pick(m.step(b64('\0a\0b'))), err(503, '5.5.1'));
  });
  it('authzid equal to the authcid is fine (case-insensitively); another one is 535 5.7.8', () => {
    assert.deepEqual(mech('PLAIN').start(b64('Alice@tern.test\0alice@tern.test\0pw')), creds('alice@tern.test', 'pw', 'Alice@tern.test'));
    assert.deepEqual(pick(mech('PLAIN').start(b64('bob@tern.test\0alice@tern.test\0pw'))), err(535, '5.7.8'));
  });
  it('"*" cancels (501 5.0.0)', () => {
    const m = mech('PLAIN');
    m.start(undefined);
    assert.deepEqual(m.step('*'), { kind: 'error', code: 501, enhanced: '5.0.0', text: 'Authentication cancelled' });
  });
  it('bad base64 is 501 5.5.2', () => {
    for (const bad of ['not base64!', 'AGFsaWNl\r\n', 'AGFsaWNlAHB', 'AGFsaWNlAHB3=', '*']) {
      assert.deepEqual(pick(mech('PLAIN').start(bad)), err(501, '5.5.2'), JSON.stringify(bad));
    }
    const m = mech('PLAIN');
    m.start(undefined);
    assert.deepEqual(pick(m.step('a b')), err(501, '5.5.2'));
  });
  it('"=" is an empty initial response; malformed messages are 501 5.5.2', () => {
    assert.deepEqual(pick(mech('PLAIN').start('=')), err(501, '5.5.2'));
    for (const bad of ['alice\0pw', '\0\0pw', '\0alice\0', '\0a\0b\0c', `\0${'a'.repeat(256)}\0pw`]) {
      assert.deepEqual(pick(mech('PLAIN').start(b64(bad))), err(501, '5.5.2'), JSON.stringify(bad));
    }
    assert.deepEqual(pick(mech('PLAIN').start(Buffer.from([0, 0x61, 0, 0xff]).toString('base64'))), err(501, '5.5.2'));
  });
});

describe('LOGIN (draft-murchison-sasl-login)', () => {
  it('Username: / Password: challenges', () => {
    const m = mech('LOGIN');
    assert.deepEqual(m.start(undefined), { kind: 'challenge', challenge: 'VXNlcm5hbWU6' });
    assert.deepEqual(m.step(b64('alice@tern.test')), { kind: 'challenge', challenge: 'UGFzc3dvcmQ6' });
    assert.deepEqual(m.step(b64('s3cret')), creds('alice@tern.test', 's3cret'));
    assert.deepEqual(pick(m.step(b64('x'))), err(503, '5.5.1'));
  });
  it('takes the user name as an initial response', () => {
    const m = mech('LOGIN');
    assert.deepEqual(m.start(b64('alice@tern.test')), { kind: 'challenge', challenge: 'UGFzc3dvcmQ6' });
    assert.deepEqual(m.step(b64('pw')), creds('alice@tern.test', 'pw'));
  });
  it('"*" cancels at either prompt', () => {
    let m = mech('LOGIN');
    m.start(undefined);
    assert.deepEqual(pick(m.step('*')), err(501, '5.0.0'));
    m = mech('LOGIN');
    m.start(undefined);
    m.step(b64('alice'));
    assert.deepEqual(pick(m.step('*')), err(501, '5.0.0'));
  });
  it('bad base64, empty and NUL-bearing fields are 501 5.5.2', () => {
    let m = mech('LOGIN');
    m.start(undefined);
    assert.deepEqual(pick(m.step('!!')), err(501, '5.5.2'));
    assert.deepEqual(pick(m.step(b64('alice'))), err(503, '5.5.1'));
    assert.deepEqual(pick(mech('LOGIN').start('=')), err(501, '5.5.2'));
    m = mech('LOGIN');
    m.start(b64('alice'));
    assert.deepEqual(pick(m.step('')), err(501, '5.5.2'));
    m = mech('LOGIN');
    m.start(undefined);
    assert.deepEqual(pick(m.step(b64('a\0b'))), err(501, '5.5.2'));
  });
});
