// Our MTA-STS policy text (RFC 8461 §3.2), its id, and the route that
// serves it by Host header. The text is checked with mailauth's parser in
// strict mode: the parser senders built on mailauth use.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { parsePolicy } from 'mailauth/lib/mta-sts.js';
import { hostOf, mountMtaSts, mxMatches, MTA_STS_PATH, policyForHost, policyId, policyText, type MtaStsConfig } from './mta-sts.ts';

const WEEK = 7 * 24 * 3600 * 1000;
const POLICY: MtaStsConfig = { mode: 'testing', mx: ['mx.tern.test', '*.backup.tern.test'], maxAge: WEEK };

describe('policyText', () => {
  it('is RFC 8461 §3.2 text with CRLF line ends, one mx line per MX, max_age in seconds', () => {
    assert.equal(policyText(POLICY), 'version: STSv1\r\nmode: testing\r\nmx: mx.tern.test\r\nmx: *.backup.tern.test\r\nmax_age: 604800\r\n');
  });

  for (const mode of ['enforce', 'testing', 'none'] as const) {
    it(`parses strictly (mailauth) in mode ${mode}`, () => {
      const p = parsePolicy(policyText({ ...POLICY, mode }), { strict: true }) as { mode: string; mx: string[]; maxAge: number };
      assert.equal(p.mode, mode);
      assert.deepEqual(p.mx, ['mx.tern.test', '*.backup.tern.test']);
      assert.equal(p.maxAge, 604800);
    });
  }

  it('gives max_age in whole seconds, up to the RFC maximum', () => {
    assert.match(policyText({ ...POLICY, maxAge: 31_557_600_000 }), /\r\nmax_age: 31557600\r\n$/);
    assert.match(policyText({ ...POLICY, maxAge: 1500 }), /\r\nmax_age: 1\r\n$/);
  });
});

describe('policyId', () => {
  it('is 1-32 letters and digits (RFC 8461 §3.1) and stable for the same text', () => {
    const id = policyId(policyText(POLICY));
    assert.match(id, /^[A-Za-z0-9]{1,32}$/);
    assert.equal(id, policyId(policyText({ ...POLICY })));
  });

  it('changes whenever the policy does', () => {
    const ids = new Set([
      policyId(policyText(POLICY)),
      policyId(policyText({ ...POLICY, mode: 'enforce' })),
      policyId(policyText({ ...POLICY, mx: ['mx.tern.test'] })),
      policyId(policyText({ ...POLICY, maxAge: 2 * WEEK })),
    ]);
    assert.equal(ids.size, 4);
  });
});

describe('hosts', () => {
  it('hostOf drops the port and a trailing dot, lower-cases', () => {
    assert.equal(hostOf('MTA-STS.Tern.Test:8025'), 'mta-sts.tern.test');
    assert.equal(hostOf('mta-sts.tern.test.'), 'mta-sts.tern.test');
    assert.equal(hostOf('[::1]:8025'), '[::1]:8025');
    assert.equal(hostOf(undefined), '');
  });

  it('policyForHost answers mta-sts.<local domain> only', () => {
    const domains = ['tern.test', 'catch.test'];
    assert.equal(policyForHost('mta-sts.tern.test', domains, POLICY), policyText(POLICY));
    assert.equal(policyForHost('mta-sts.catch.test', domains, POLICY), policyText(POLICY));
    for (const h of ['tern.test', 'mta-sts.other.test', 'mta-sts.sub.tern.test', 'x.mta-sts.tern.test', 'mta-sts.', '']) {
      assert.equal(policyForHost(h, domains, POLICY), undefined, h);
    }
  });

  it('mxMatches: exact names, and a wildcard for one leftmost label (RFC 8461 §4.1)', () => {
    assert.ok(mxMatches('mx.tern.test', 'MX.tern.test.'));
    assert.ok(mxMatches('*.tern.test', 'mx.tern.test'));
    assert.ok(!mxMatches('*.tern.test', 'a.mx.tern.test'));
    assert.ok(!mxMatches('*.tern.test', 'tern.test'));
    assert.ok(!mxMatches('mx.tern.test', 'mx2.tern.test'));
  });
});

describe('mountMtaSts', () => {
  it('serves text/plain for a policy host, and the 404 handler for others', async () => {
    const app = Fastify();
    app.setNotFoundHandler((_req, reply) => reply.code(404).send({ status: 404 }));
    mountMtaSts(app, (host) => policyForHost(host, ['tern.test'], POLICY));
    try {
      const ok = await app.inject({ method: 'GET', url: MTA_STS_PATH, headers: { host: 'mta-sts.tern.test:8443' } });
      assert.equal(ok.statusCode, 200);
      assert.match(String(ok.headers['content-type']), /^text\/plain\b/);
      assert.equal(ok.body, policyText(POLICY));
      const other = await app.inject({ method: 'GET', url: MTA_STS_PATH, headers: { host: 'mta-sts.other.test' } });
      assert.equal(other.statusCode, 404);
      assert.deepEqual(other.json(), { status: 404 });
    } finally {
      await app.close();
    }
  });
});
