// STARTTLS (RFC 3207): the command-injection attack of CVE-2011-0411
// (plaintext commands pipelined behind STARTTLS must be discarded, never run
// inside the TLS session), forgetting the EHLO state after the upgrade
// (§4.2), and where STARTTLS is and is not available.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type tls from 'node:tls';
import { startServer, type TestServer } from '../helpers/server.ts';
import { open, expectCmd, expectSilence } from './smtp-kit.ts';

describe('STARTTLS', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  it('commands injected behind STARTTLS are not answered over TLS (CVE-2011-0411)', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send('STARTTLS\r\nRSET\r\n');
      assert.match(await c.reply(), /^220 2\.0\.0 /);
      assert.equal(c.pending, '', 'nothing may follow the 220 in plaintext');
      await c.starttls();
      assert.ok((c.socket as tls.TLSSocket).encrypted);
      await expectSilence(c);
      // The first reply over TLS is to our own EHLO, not to the injected RSET.
      const ehlo = await expectCmd(c, 'EHLO client.test', /^250-mx\.tern\.test Hello client\.test/);
      assert.doesNotMatch(ehlo, /STARTTLS/, 'STARTTLS is not offered once TLS is on');
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('a whole injected transaction is discarded too', async () => {
    const c = await open(srv.port('smtp'));
    try {
      c.send('STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@tern.test>\r\n');
      assert.match(await c.reply(), /^220 /);
      await c.starttls();
      await expectSilence(c);
      await expectCmd(c, 'EHLO client.test', /^250[- ]/);
      // No MAIL survived the upgrade.
      await expectCmd(c, 'RCPT TO:<alice@tern.test>', /^503 5\.5\.1 /);
    } finally {
      c.close();
    }
  });

  it('after STARTTLS the EHLO is forgotten: MAIL before a new EHLO → 503', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'STARTTLS', /^220 2\.0\.0 /);
      await c.starttls();
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^503 5\.5\.1 /);
      await expectCmd(c, 'EHLO client.test', /^250[- ]/);
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 2\.1\.0 /);
    } finally {
      c.close();
    }
  });

  it('STARTTLS twice → 503 5.5.1', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'STARTTLS', /^220 /);
      await c.starttls();
      await expectCmd(c, 'EHLO client.test', /^250[- ]/);
      await expectCmd(c, 'STARTTLS', /^503 5\.5\.1 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });

  it('STARTTLS with an argument → 501; inside a transaction → 503', async () => {
    const c = await open(srv.port('smtp'));
    try {
      await expectCmd(c, 'STARTTLS now', /^501 5\.5\.4 /);
      await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
      await expectCmd(c, 'STARTTLS', /^503 5\.5\.1 /);
    } finally {
      c.close();
    }
  });

  it('works on the submission port as well', async () => {
    const c = await open(srv.port('submission'));
    try {
      await expectCmd(c, 'STARTTLS', /^220 /);
      await c.starttls();
      await expectCmd(c, 'EHLO client.test', /^250[- ]/);
    } finally {
      c.close();
    }
  });

  it('submissions (implicit TLS): STARTTLS not offered, and refused with 503', async () => {
    const c = await open(srv.port('submissions'), { tls: true, ehlo: false });
    try {
      const ehlo = await expectCmd(c, 'EHLO client.test', /^250[- ]/, /^250[- ]PIPELINING$/m);
      assert.doesNotMatch(ehlo, /STARTTLS/);
      await expectCmd(c, 'STARTTLS', /^503 5\.5\.1 /);
      await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
    } finally {
      c.close();
    }
  });
});
