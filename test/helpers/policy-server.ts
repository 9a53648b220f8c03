// An MTA-STS policy host for tests (RFC 8461 §3.3): a real HTTPS server on
// 127.0.0.1 that answers GET /.well-known/mta-sts.txt by Host header from a
// map the test changes at will, and can misbehave in the ways a sender must
// survive: a redirect, another media type, a huge or slow body, a 404, a
// certificate for another name or one nobody signed. Point the policy
// host's A record (mta-sts.<domain>) at 127.0.0.1 in the loopback DNS
// server and give the sender this server's `port`.
//
//   const ca = await makeTestCa();
//   const server = await startPolicyServer(await ca.issue(['mta-sts.example.test']));
//   server.policies.set('mta-sts.example.test', policyBody({ mode: 'enforce', mx: ['mx.example.test'], maxAge: 86400 }));

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** RFC 8461 §3.3: the one path senders fetch. */
export const POLICY_PATH = '/.well-known/mta-sts.txt';

/**
 * How to answer a request for one host:
 * - a string: 200, `text/plain; charset=utf-8`, that body;
 * - an object, for everything else. Defaults: status 200, text/plain, empty body.
 */
export type PolicyAnswer =
  | string
  | {
      status?: number;
      /** The Content-Type header; null sends none. */
      contentType?: string | null;
      body?: string;
      /** A Location header (give a 3xx status with it). */
      location?: string;
      /** Wait this long (ms) before sending anything. */
      delayMs?: number;
      /** Send the headers and the first half of the body, then wait this long (ms) before the rest. */
      stallMs?: number;
      /** After `body`, this many more octets of filler, chunked (no Content-Length), so only counting finds the size. */
      hugeBytes?: number;
    };

export interface PolicyRequest {
  /** The Host header's name, lower case, without the port. */
  host: string;
  /** The Host header as sent (port included, if any). */
  hostHeader: string;
  method: string;
  path: string;
  /** The TLS SNI name the client asked for. */
  servername: string | undefined;
}

export interface PolicyServer {
  port: number;
  /** Host name (lower case, no port) to its answer; a host not in the map, or another path, gets 404. */
  policies: Map<string, PolicyAnswer>;
  /** Every request, in order. */
  requests: PolicyRequest[];
  /** Requests for one host name. */
  requestsFor(host: string): PolicyRequest[];
  /** Present this certificate to clients whose SNI is `servername` (null: back to the default). */
  setCertificate(servername: string, cert: { cert: string; key: string; chain?: string } | null): void;
  close(): Promise<void>;
}

/** A policy body in RFC 8461 §3.2 form, CRLF line ends; `maxAge` in seconds. */
export function policyBody(p: { mode: string; mx: string[]; maxAge: number }): string {
  return ['version: STSv1', `mode: ${p.mode}`, ...p.mx.map((m) => `mx: ${m}`), `max_age: ${p.maxAge}`].map((l) => `${l}\r\n`).join('');
}

/** `cert` and `key` of the default certificate; `chain`, when given, is what is presented (leaf then CA). */
export async function startPolicyServer(defaultCert: { cert: string; key: string; chain?: string }): Promise<PolicyServer> {
  const policies = new Map<string, PolicyAnswer>();
  const requests: PolicyRequest[] = [];
  const contexts = new Map<string, tls.SecureContext>();
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<net.Socket>();

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const server = https.createServer({
    cert: defaultCert.chain ?? defaultCert.cert,
    key: defaultCert.key,
    SNICallback: (name, cb) => cb(null, contexts.get(name.toLowerCase())),
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A client that gives up mid-body (size limit, timeout) resets the socket: expected here.
  server.on('tlsClientError', () => {});

  server.on('request', (req, res) => {
    const hostHeader = req.headers.host ?? '';
    const host = hostHeader.toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
    requests.push({ host, hostHeader, method: req.method ?? '', path: req.url ?? '', servername: (req.socket as tls.TLSSocket).servername || undefined });
    res.on('error', () => {});
    const answer = req.url === POLICY_PATH ? policies.get(host) : undefined;
    if (answer === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const a = typeof answer === 'string' ? { body: answer } : answer;
    const send = (): void => {
      if (res.destroyed) return;
      const body = Buffer.from(a.body ?? '');
      const headers: Record<string, string> = {};
      if (a.contentType !== null) headers['content-type'] = a.contentType ?? 'text/plain; charset=utf-8';
      if (a.location) headers['location'] = a.location;
      if (!a.hugeBytes) headers['content-length'] = String(body.length);
      res.writeHead(a.status ?? 200, headers);
      if (a.hugeBytes) {
        res.write(body);
        const filler = Buffer.alloc(16 * 1024, 'x');
        let left = a.hugeBytes;
        // Written as the client reads: a client that stops reading leaves the rest unsent.
        const pump = (): void => {
          while (left > 0 && !res.destroyed) {
            const n = Math.min(left, filler.length);
            left -= n;
            if (!res.write(filler.subarray(0, n))) {
              res.once('drain', pump);
              return;
            }
          }
          if (!res.destroyed) res.end();
        };
        pump();
        return;
      }
      if (a.stallMs) {
        const half = Math.floor(body.length / 2);
        res.write(body.subarray(0, half));
        later(a.stallMs, () => {
          if (!res.destroyed) res.end(body.subarray(half));
        });
        return;
      }
      res.end(body);
    };
    if (a.delayMs) later(a.delayMs, send);
    else send();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    policies,
    requests,
    requestsFor: (host) => requests.filter((r) => r.host === host),
    setCertificate: (servername, cert) => {
      if (cert) contexts.set(servername.toLowerCase(), tls.createSecureContext({ cert: cert.chain ?? cert.cert, key: cert.key }));
      else contexts.delete(servername.toLowerCase());
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * A certificate for `names` signed by its own key: no CA vouches for it, so
 * a sender that validates (MTA-STS, RFC 8461 §3.3 and §4.2) must refuse it.
 */
export async function selfSignedCert(names: string[]): Promise<{ cert: string; key: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-selfsigned-'));
  try {
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '30', '-subj', `/CN=${names[0] ?? 'localhost'}`,
      '-addext', `subjectAltName=${[...names.map((n) => `DNS:${n}`), 'IP:127.0.0.1'].join(',')}`,
    ]);
    return { cert: fs.readFileSync(cert, 'utf8'), key: fs.readFileSync(key, 'utf8') };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
