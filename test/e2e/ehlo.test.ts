// EHLO/HELO argument syntax (issue 11, break 5): the name is echoed in our
// 250 and written into the Received: field of every message, so only a
// domain or an address literal (RFC 5321 §4.1.1.1, §4.1.3) is accepted;
// anything else gets 501 5.5.4 and is neither echoed nor stored.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startServer, mailbox, waitFor, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, sendMail } from './smtp-kit.ts';

const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;

describe('EHLO/HELO argument', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  for (const verb of ['EHLO', 'HELO']) {
    it(`${verb} with control bytes → 501 5.5.4, not echoed; the session goes on`, async () => {
      const c = await open(srv.port('smtp'), { ehlo: false });
      try {
        const r = await c.cmd(`${verb} nul\x00byte\x0bvt\x1b[0m`);
        assert.match(r, /^501 5\.5\.4 /);
        assert.doesNotMatch(r, CONTROL);
        assert.doesNotMatch(r, /nul|byte/, 'the argument is not echoed');
        // Without a valid greeting there is no transaction.
        await expectCmd(c, 'MAIL FROM:<a@client.test>', /^503 5\.5\.1 /);
        await expectCmd(c, `${verb} client.test`, /^250[ -]/);
      } finally {
        c.close();
      }
    });
  }

  it('other malformed names are refused too', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      for (const bad of ['a..b', 'quote"d.test', 'paren(s).test', '[300.1.1.1]', '[IPv6:zz::1]', 'x\ty', 'bücher.test']) {
        assert.match(await c.cmd(`EHLO ${bad}`), /^501 5\.5\.4 /, JSON.stringify(bad));
      }
    } finally {
      c.close();
    }
  });

  it('domains, underscores, IPv4/IPv6/general literals are accepted', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    try {
      for (const ok of ['client.test', 'my_pc.corp.test', 'mx.client.test.', '[127.0.0.1]', '[IPv6:::1]', '[x-tag:anything]', 'DESKTOP-ABC']) {
        assert.match(await c.cmd(`EHLO ${ok}`), /^250-mx\.tern\.test Hello /, ok);
      }
    } finally {
      c.close();
    }
  });

  it('the Received: field of a stored message carries only the valid name', async () => {
    const c = await open(srv.port('smtp'), { ehlo: false });
    let id: string;
    try {
      assert.match(await c.cmd('EHLO evil\x1b[31m.test'), /^501 5\.5\.4 /);
      await expectCmd(c, 'EHLO my_pc.client.test', /^250-mx\.tern\.test Hello my_pc\.client\.test /);
      id = await sendMail(c, 'someone@client.test', ['alice@tern.test'], 'Subject: ehlo\r\n\r\nhi\r\n');
    } finally {
      c.close();
    }
    const text = (await waitFor(
      () => mailbox(srv.dataDir, 'tern.test', 'alice').map((f) => fs.readFileSync(f, 'latin1')).find((t) => t.includes(id)),
      10_000,
      'local delivery',
    ))!;
    const header = text.slice(0, text.indexOf('\r\n\r\n'));
    assert.match(header, /^Received: from my_pc\.client\.test \(\[127\.0\.0\.1\]\)\r\n/m);
    assert.doesNotMatch(header.replace(/\r\n[\t ]/g, ' ').replace(/\r\n/g, '\n'), CONTROL);
    assert.doesNotMatch(header, /evil/);
  });
});
