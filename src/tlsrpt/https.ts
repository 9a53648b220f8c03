// The https: rua (RFC 8460 §5.4): POST the gzipped report with
// Content-Type application/tlsrpt+gzip; any 2xx means the receiver took it.
// Redirects are not followed (a 3xx is a failure, retried later like any
// other), and the whole request has one deadline.
//
// The URL comes from a TXT record anyone may publish, so by default the
// POST goes only to public addresses: a domain must not make us send
// requests into our own network (loopback, private, link-local ranges).
// The host name is resolved through our resolver, as everything else is.

import https from 'node:https';
import net from 'node:net';
import type { LookupFunction } from 'node:net';
import type { Resolver } from '../dns/resolver.ts';

export interface PostOptions {
  resolver: Resolver;
  timeoutMs: number;
  /** Extra trusted CAs (tests); production trusts Node's defaults. */
  ca?: string | Buffer | (string | Buffer)[] | undefined;
  /** Allow loopback and private addresses (tests only). */
  allowPrivate?: boolean | undefined;
  userAgent: string;
  signal?: AbortSignal | undefined;
}

/** Bytes of an answer read (and thrown away): the status is all that matters. */
const MAX_ANSWER = 64 * 1024;

const BLOCKED = new net.BlockList();
for (const [net4, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) BLOCKED.addSubnet(net4, prefix, 'ipv4');
for (const [net6, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b:1::', 48]] as const) BLOCKED.addSubnet(net6, prefix, 'ipv6');

/** Whether a POST to this address is refused by default (RFC 6890 special-purpose ranges that are not the public Internet). */
export function isPrivateAddress(ip: string): boolean {
  const family = net.isIP(ip);
  if (family === 4) return BLOCKED.check(ip, 'ipv4');
  if (family !== 6) return true;
  // An IPv4-mapped address (::ffff:a.b.c.d) is the IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return BLOCKED.check(mapped[1]!, 'ipv4');
  return BLOCKED.check(ip, 'ipv6');
}

/** POSTs `body`; resolves with null on a 2xx answer, otherwise with why not. Never throws. */
export function postReport(url: URL, body: Buffer, o: PostOptions): Promise<string | null> {
  return new Promise((resolve) => {
    let req: ReturnType<typeof https.request> | undefined;
    let done = false;
    const finish = (why: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      req?.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => finish(`timed out after ${o.timeoutMs} ms`), o.timeoutMs);
    const onAbort = (): void => finish('shutting down');
    if (o.signal?.aborted) return finish('shutting down');
    o.signal?.addEventListener('abort', onAbort);

    const host = url.hostname.replace(/^\[|\]$/g, '');
    // An IP literal is connected to without a lookup, so it is checked here.
    if (net.isIP(host) !== 0 && !o.allowPrivate && isPrivateAddress(host)) return finish(`${host} is not a public address`);
    const lookup: LookupFunction = (hostname, options, callback) => {
      resolveHost(o.resolver, hostname, options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family).then(
        (all) => {
          const usable = o.allowPrivate ? all : all.filter((a) => !isPrivateAddress(a.address));
          if (usable.length === 0) {
            const e: NodeJS.ErrnoException = new Error(all.length > 0 ? `${hostname} has only private addresses` : `${hostname} has no address`);
            e.code = 'ENOTFOUND';
            callback(e, '', 0);
          } else if (options.all) callback(null, usable);
          else callback(null, usable[0]!.address, usable[0]!.family);
        },
        (e: unknown) => callback(Object.assign(new Error(String(e)), { code: 'ENOTFOUND' }), '', 0),
      );
    };
    try {
      req = https.request({
        protocol: 'https:',
        hostname: host,
        port: url.port === '' ? 443 : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method: 'POST',
        headers: { 'Content-Type': 'application/tlsrpt+gzip', 'Content-Length': String(body.length), 'User-Agent': o.userAgent },
        ca: o.ca,
        agent: false,
        lookup,
      });
    } catch (e) {
      return finish(String(e));
    }
    req.on('error', (e: NodeJS.ErrnoException) => finish(e.code ? `${e.code}: ${e.message}` : e.message));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      let read = 0;
      // Read the answer to its end (or a bound) so the connection closes cleanly; its content is not used.
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read > MAX_ANSWER) finish(status >= 200 && status < 300 ? null : `HTTP ${status}`);
      });
      res.on('end', () => finish(status >= 200 && status < 300 ? null : `HTTP ${status}`));
      res.on('error', () => finish(status >= 200 && status < 300 ? null : `HTTP ${status}`));
    });
    req.end(body);
  });
}

async function resolveHost(resolver: Resolver, host: string, family: number | undefined): Promise<{ address: string; family: number }[]> {
  const [v4, v6] = await Promise.all([
    family === 6 ? [] : resolver.a(host).catch(() => [] as string[]),
    family === 4 ? [] : resolver.aaaa(host).catch(() => [] as string[]),
  ]);
  return [...v4.map((address) => ({ address, family: 4 })), ...v6.map((address) => ({ address, family: 6 }))];
}
