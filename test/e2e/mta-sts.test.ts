// Our MTA-STS policy served by a real Tern (issue 15, item 5): the http
// listener answers GET /.well-known/mta-sts.txt by Host header, for
// mta-sts.<each local domain>, with the policy from the mtaSts section, and
// 404 for any other host. Once over plain HTTP and once over HTTPS (the way
// senders fetch it, RFC 8461 §3.3), with the server's certificate.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { startServer, type TestServer } from '../helpers/server.ts';

interface Answer { status: number; type: string; body: string }

function get(port: number, host: string, secure: boolean, path = '/.well-known/mta-sts.txt'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, path, headers: { host }, ...(secure ? { rejectUnauthorized: false, servername: host.replace(/:\d+$/, '') || undefined } : {}) };
    const req = (secure ? https : http).get(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
  });
}

const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx.tern.test\r\nmx: *.backup.tern.test\r\nmax_age: 86400\r\n';

describe('GET /.well-known/mta-sts.txt', () => {
  let srv: TestServer;
  let plain: number;
  let secure: number;
  before(async () => {
    srv = await startServer({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0, tls: true },
      ],
      mtaSts: { mode: 'enforce', mx: ['mx.tern.test', '*.backup.tern.test'], maxAge: '1d' },
    });
    const ports = srv.tern.ports.filter((p) => p.role === 'http').map((p) => p.port);
    [plain, secure] = [ports[0]!, ports[1]!];
  });
  after(() => srv.stop());

  for (const scheme of ['http', 'https'] as const) {
    describe(scheme, () => {
      const port = (): number => (scheme === 'https' ? secure : plain);

      it('serves the policy for mta-sts.<each local domain>, as text/plain with CRLF lines', async () => {
        for (const host of ['mta-sts.tern.test', 'MTA-STS.catch.test', `mta-sts.tern.test:${port()}`]) {
          const a = await get(port(), host, scheme === 'https');
          assert.equal(a.status, 200, host);
          assert.match(a.type, /^text\/plain\b/);
          assert.equal(a.body, POLICY);
        }
      });

      it('answers 404 for other hosts', async () => {
        for (const host of ['tern.test', 'mta-sts.other.test', 'mx.tern.test', '127.0.0.1']) {
          const a = await get(port(), host, scheme === 'https');
          assert.equal(a.status, 404, host);
          assert.doesNotMatch(a.body, /STSv1/);
        }
      });
    });
  }
});
