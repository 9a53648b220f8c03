import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { decodeXtext, encodeXtext, parseMailParams, parseRcptParams } from './params.ts';
import { SmtpError } from './reply.ts';

const ESMTP = { esmtp: true };
const HELO = { esmtp: false };

function throwsSmtp(fn: () => unknown, code: number, enhanced: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmtpError, `expected SmtpError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.enhanced, enhanced);
    return true;
  });
}

describe('parseMailParams', () => {
  it('no parameters', () => {
    assert.deepEqual(parseMailParams('', ESMTP), { smtputf8: false });
    assert.deepEqual(parseMailParams('', HELO), { smtputf8: false });
  });

  it('SIZE', () => {
    assert.deepEqual(parseMailParams('SIZE=12345', ESMTP), { smtputf8: false, size: 12345 });
    assert.deepEqual(parseMailParams('size=0', ESMTP), { smtputf8: false, size: 0 });
    for (const bad of ['SIZE', 'SIZE=', 'SIZE=-1', 'SIZE=1.5', 'SIZE=1e3', 'SIZE=abc', 'SIZE=' + '9'.repeat(21)]) {
      throwsSmtp(() => parseMailParams(bad, ESMTP), 501, '5.5.4');
    }
  });

  it('BODY', () => {
    assert.deepEqual(parseMailParams('BODY=7BIT', ESMTP), { smtputf8: false, body: '7BIT' });
    assert.deepEqual(parseMailParams('BODY=8BITMIME', ESMTP), { smtputf8: false, body: '8BITMIME' });
    assert.deepEqual(parseMailParams('body=8bitmime', ESMTP), { smtputf8: false, body: '8BITMIME' });
    throwsSmtp(() => parseMailParams('BODY=BINARYMIME', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseMailParams('BODY=9BIT', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseMailParams('BODY', ESMTP), 501, '5.5.4');
  });

  it('REQUIRETLS (RFC 8689 §4.1): a flag without a value', () => {
    assert.deepEqual(parseMailParams('REQUIRETLS', ESMTP), { smtputf8: false, requireTls: true });
    assert.deepEqual(parseMailParams('requiretls SIZE=10', ESMTP), { smtputf8: false, requireTls: true, size: 10 });
    throwsSmtp(() => parseMailParams('REQUIRETLS=yes', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('REQUIRETLS REQUIRETLS', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('REQUIRETLS', HELO), 555, '5.5.4');
  });

  it('SMTPUTF8', () => {
    assert.deepEqual(parseMailParams('SMTPUTF8', ESMTP), { smtputf8: true });
    assert.deepEqual(parseMailParams('smtputf8', ESMTP), { smtputf8: true });
    throwsSmtp(() => parseMailParams('SMTPUTF8=yes', ESMTP), 501, '5.5.4');
  });

  it('RET', () => {
    assert.deepEqual(parseMailParams('RET=FULL', ESMTP), { smtputf8: false, ret: 'FULL' });
    assert.deepEqual(parseMailParams('RET=hdrs', ESMTP), { smtputf8: false, ret: 'HDRS' });
    throwsSmtp(() => parseMailParams('RET=NONE', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('RET', ESMTP), 501, '5.5.4');
  });

  it('ENVID is xtext-decoded', () => {
    assert.deepEqual(parseMailParams('ENVID=QQ314159', ESMTP), { smtputf8: false, envid: 'QQ314159' });
    assert.equal(parseMailParams('ENVID=a+2Bb', ESMTP).envid, 'a+b');
    assert.equal(parseMailParams('ENVID=+2B', ESMTP).envid, '+');
    assert.equal(parseMailParams('ENVID=x+3Dy+20z', ESMTP).envid, 'x=y z');
    assert.equal(parseMailParams('ENVID=' + 'e'.repeat(100), ESMTP).envid, 'e'.repeat(100));
    throwsSmtp(() => parseMailParams('ENVID=' + 'e'.repeat(101), ESMTP), 501, '5.5.4');
    for (const bad of ['ENVID=a+2', 'ENVID=a+', 'ENVID=a+2b', 'ENVID=a+GG', 'ENVID=a=b', 'ENVID=']) {
      throwsSmtp(() => parseMailParams(bad, ESMTP), 501, '5.5.4');
    }
  });

  it('everything at once', () => {
    assert.deepEqual(parseMailParams('SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1', ESMTP), {
      smtputf8: true,
      size: 1000,
      body: '8BITMIME',
      ret: 'HDRS',
      envid: 'id+1',
    });
  });

  it('extra spaces between parameters are tolerated', () => {
    assert.deepEqual(parseMailParams('SIZE=1  SMTPUTF8', ESMTP), { smtputf8: true, size: 1 });
  });

  it('unknown parameter is 555 5.5.4', () => {
    throwsSmtp(() => parseMailParams('FOO=bar', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseMailParams('NOTIFY=NEVER', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseMailParams('AUTH=<>', ESMTP), 555, '5.5.4');
  });

  it('duplicate parameter is 501', () => {
    throwsSmtp(() => parseMailParams('SIZE=1 SIZE=2', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('SMTPUTF8 smtputf8', ESMTP), 501, '5.5.4');
  });

  it('bad keyword syntax is 501', () => {
    throwsSmtp(() => parseMailParams('-SIZE=1', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('=1', ESMTP), 501, '5.5.4');
    throwsSmtp(() => parseMailParams('SI_ZE=1', ESMTP), 501, '5.5.4');
  });

  it('parameters after HELO are 555', () => {
    throwsSmtp(() => parseMailParams('SIZE=10', HELO), 555, '5.5.4');
    throwsSmtp(() => parseMailParams('BODY=8BITMIME', HELO), 555, '5.5.4');
  });
});

describe('parseRcptParams', () => {
  it('no parameters', () => {
    assert.deepEqual(parseRcptParams('', ESMTP), {});
  });

  it('NOTIFY', () => {
    assert.deepEqual(parseRcptParams('NOTIFY=NEVER', ESMTP), { notify: [] });
    assert.deepEqual(parseRcptParams('NOTIFY=never', ESMTP), { notify: [] });
    assert.deepEqual(parseRcptParams('NOTIFY=SUCCESS', ESMTP), { notify: ['SUCCESS'] });
    assert.deepEqual(parseRcptParams('NOTIFY=SUCCESS,FAILURE,DELAY', ESMTP), { notify: ['SUCCESS', 'FAILURE', 'DELAY'] });
    assert.deepEqual(parseRcptParams('NOTIFY=delay,failure', ESMTP), { notify: ['DELAY', 'FAILURE'] });
  });

  it('NOTIFY refuses NEVER with others, duplicates and junk', () => {
    for (const bad of [
      'NOTIFY=NEVER,SUCCESS',
      'NOTIFY=SUCCESS,NEVER',
      'NOTIFY=NEVER,NEVER',
      'NOTIFY=SUCCESS,SUCCESS',
      'NOTIFY=FAILURE,DELAY,FAILURE',
      'NOTIFY=',
      'NOTIFY',
      'NOTIFY=SUCCESS,',
      'NOTIFY=,SUCCESS',
      'NOTIFY=ALWAYS',
    ]) {
      throwsSmtp(() => parseRcptParams(bad, ESMTP), 501, '5.5.4');
    }
  });

  it('ORCPT is decoded', () => {
    assert.deepEqual(parseRcptParams('ORCPT=rfc822;user@example.com', ESMTP), {
      orcpt: { type: 'rfc822', address: 'user@example.com' },
    });
    assert.deepEqual(parseRcptParams('ORCPT=RFC822;a+2Bb+3Dc@example.com', ESMTP), {
      orcpt: { type: 'rfc822', address: 'a+b=c@example.com' },
    });
    assert.deepEqual(parseRcptParams('NOTIFY=FAILURE ORCPT=rfc822;x@y.example', ESMTP), {
      notify: ['FAILURE'],
      orcpt: { type: 'rfc822', address: 'x@y.example' },
    });
  });

  it('bad ORCPT is 501', () => {
    for (const bad of ['ORCPT=user@example.com', 'ORCPT=;user@example.com', 'ORCPT=rfc822;', 'ORCPT=-rfc822;a@b', 'ORCPT=rfc822;a+ZZ@b', 'ORCPT']) {
      throwsSmtp(() => parseRcptParams(bad, ESMTP), 501, '5.5.4');
    }
    assert.equal(parseRcptParams('ORCPT=rfc822;' + 'a'.repeat(500), ESMTP).orcpt?.address.length, 500);
    throwsSmtp(() => parseRcptParams('ORCPT=rfc822;' + 'a'.repeat(501), ESMTP), 501, '5.5.4');
  });

  it('unknown parameter is 555 5.5.4; duplicates are 501', () => {
    throwsSmtp(() => parseRcptParams('SIZE=10', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseRcptParams('XFOO', ESMTP), 555, '5.5.4');
    throwsSmtp(() => parseRcptParams('NOTIFY=NEVER notify=SUCCESS', ESMTP), 501, '5.5.4');
  });

  it('parameters after HELO are 555', () => {
    throwsSmtp(() => parseRcptParams('NOTIFY=NEVER', HELO), 555, '5.5.4');
  });
});

describe('xtext', () => {
  it('encodes "+", "=", controls, space and non-ASCII', () => {
    assert.equal(encodeXtext('plain'), 'plain');
    assert.equal(encodeXtext('a+b=c d'), 'a+2Bb+3Dc+20d');
    assert.equal(encodeXtext('\x00\x7f'), '+00+7F');
    assert.equal(encodeXtext('é'), '+C3+A9');
    assert.equal(encodeXtext(''), '');
  });

  it('decodes', () => {
    assert.equal(decodeXtext('+2B'), '+');
    assert.equal(decodeXtext('a+2Bb+3Dc+20d'), 'a+b=c d');
    assert.equal(decodeXtext('+C3+A9'), 'é');
    assert.equal(decodeXtext(''), '');
  });

  it('refuses bad xtext', () => {
    for (const bad of ['+', '+2', '+2b', '+G0', 'a=b', 'a b', 'tab\t', 'é', '+FF', '+C3']) {
      throwsSmtp(() => decodeXtext(bad), 501, '5.5.4');
    }
  });

  it('round-trips', () => {
    const samples = ['', 'plain', 'a+b', '=', '+2B', 'user@example.com', 'with space', '\x01\x1f\x7f', 'jösé@exämple.org', '日本語', '😀', '!"#$%&\'()*,-./:;<>?@[\\]^_`{|}~'];
    for (const s of samples) {
      const enc = encodeXtext(s);
      assert.match(enc, /^[\x21-\x2a\x2c-\x3c\x3e-\x7e]*(?:\+[0-9A-F]{2}[\x21-\x2a\x2c-\x3c\x3e-\x7e]*)*$/, s);
      assert.equal(decodeXtext(enc), s, s);
    }
    // Every octet of printable ASCII, and decode(encode(x)) for it.
    for (let c = 0x21; c <= 0x7e; c++) {
      const s = String.fromCharCode(c);
      assert.equal(decodeXtext(encodeXtext(s)), s);
    }
  });
});
