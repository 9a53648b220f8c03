import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { SmtpError, formatReply, reply } from './reply.ts';

describe('formatReply', () => {
  it('single line with enhanced code', () => {
    assert.equal(formatReply({ code: 250, enhanced: '2.1.0', lines: ['Sender OK'] }), '250 2.1.0 Sender OK\r\n');
  });

  it('single line without enhanced code', () => {
    assert.equal(formatReply({ code: 220, lines: ['mx.example ESMTP Tern'] }), '220 mx.example ESMTP Tern\r\n');
    assert.equal(formatReply({ code: 220, enhanced: undefined, lines: ['hi'] }), '220 hi\r\n');
    assert.equal(formatReply({ code: 220, enhanced: '', lines: ['hi'] }), '220 hi\r\n');
  });

  it('multi-line without enhanced code', () => {
    assert.equal(formatReply({ code: 250, lines: ['a', 'b'] }), '250-a\r\n250 b\r\n');
    assert.equal(
      formatReply({ code: 250, lines: ['mx.example', 'PIPELINING', '8BITMIME', 'SMTPUTF8'] }),
      '250-mx.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n',
    );
  });

  it('multi-line with enhanced code on every line', () => {
    assert.equal(formatReply({ code: 550, enhanced: '5.7.1', lines: ['a', 'b', 'c'] }), '550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1 c\r\n');
  });

  it('empty text', () => {
    assert.equal(formatReply({ code: 250, enhanced: '2.0.0', lines: [''] }), '250 2.0.0\r\n');
    assert.equal(formatReply({ code: 250, enhanced: '2.0.0', lines: [] }), '250 2.0.0\r\n');
  });

  it('reply() builds a Reply', () => {
    assert.deepEqual(reply(250, '2.0.0', 'a', 'b'), { code: 250, enhanced: '2.0.0', lines: ['a', 'b'] });
    assert.equal(formatReply(reply(354, undefined, 'End data with <CR><LF>.<CR><LF>')), '354 End data with <CR><LF>.<CR><LF>\r\n');
  });
});

describe('SmtpError', () => {
  it('carries code, enhanced code and text', () => {
    const e = new SmtpError(550, '5.1.1', 'No such user');
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'SmtpError');
    assert.equal(e.code, 550);
    assert.equal(e.enhanced, '5.1.1');
    assert.equal(e.text, 'No such user');
    assert.equal(e.message, '550 5.1.1 No such user');
    assert.equal(e.temporary, false);
    assert.deepEqual(e.toReply(), { code: 550, enhanced: '5.1.1', lines: ['No such user'] });
    assert.equal(formatReply(e.toReply()), '550 5.1.1 No such user\r\n');
  });

  it('temporary is true only for 4xx', () => {
    assert.equal(new SmtpError(421, '4.4.2', 'x').temporary, true);
    assert.equal(new SmtpError(451, '4.3.0', 'x').temporary, true);
    assert.equal(new SmtpError(250, '2.0.0', 'x').temporary, false);
    assert.equal(new SmtpError(554, '5.0.0', 'x').temporary, false);
  });

  it('from() passes an SmtpError through unchanged', () => {
    const e = new SmtpError(552, '5.3.4', 'Too big');
    assert.equal(SmtpError.from(e), e);
  });

  it('from() turns anything else into 451 4.3.0, keeping it only as cause', () => {
    for (const thing of [new Error('ENOSPC: secret /var/spool path'), 'a string', undefined, null, { code: 550 }]) {
      const e = SmtpError.from(thing);
      assert.ok(e instanceof SmtpError);
      assert.equal(e.code, 451);
      assert.equal(e.enhanced, '4.3.0');
      assert.equal(e.temporary, true);
      assert.equal(e.cause, thing);
      assert.doesNotMatch(e.text, /secret|ENOSPC/);
      assert.equal(formatReply(e.toReply()), '451 4.3.0 Local error in processing, try again later\r\n');
    }
  });
});
