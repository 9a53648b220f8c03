// DNS lookups whose answers say whether they are DNSSEC-secure, for DANE
// (RFC 7672). Node's resolver (c-ares) hides the AD bit, so these queries go
// straight to the configured validating resolver (`dns.servers`, e.g. a local
// unbound) with dns-packet. We do not validate signatures ourselves: like
// Postfix and Exim we trust the AD bit of a resolver we are configured to
// trust, which RFC 6698 §4.1 and RFC 4035 §4.9.3 allow when the path to it is
// secure (in practice: the resolver runs on the same host).
//
// Decisions the RFCs leave to us:
// - Every query carries EDNS0 (RFC 6891) with the DO bit (RFC 3225 §3) and a
//   1232-octet UDP payload size (the DNS flag day 2020 value, small enough to
//   avoid IP fragmentation); RD is set, CD is not (the resolver must validate).
// - Each query uses a fresh UDP socket (so a fresh random source port) and a
//   random 16-bit id. A datagram is accepted only from the server we asked, with
//   our id, QR set and our question echoed; anything else is ignored and we keep
//   waiting (RFC 5452 §9.1), so a spoofed or stale reply cannot end the query.
// - A truncated UDP reply (TC) is asked again over TCP to the same server
//   (RFC 7766 §5); over TCP a reply that does not match is a failure of that server.
// - Servers are asked in order; each gets `timeout` ms per try and there are
//   TRIES rounds over the list, as in resolver.ts. A timeout or network error
//   moves on to the next server; only when every server failed does the lookup
//   throw a temporary DnsError. REFUSED and NOTIMP also move on (that server will
//   not serve us), and are returned as the rcode if no server does better.
// - SERVFAIL is an answer, not an error: a validating resolver gives it for bogus
//   data (RFC 4035 §5.5), and DANE must tell "bogus" from "unreachable".
// - Answers are cached by (type, name): positive ones for the smallest TTL in the
//   answer (CNAMEs included, since the chain is part of the answer), negative ones
//   (NXDOMAIN, NODATA) for the SOA's TTL or minimum, whichever is smaller
//   (RFC 2308 §5), both capped. SERVFAIL, REFUSED and the like are never cached:
//   the resolver already caches its own failures, and a fix should show up at
//   the next attempt. Concurrent lookups of the same (type, name) share one query.

import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';
import type { Answer, DecodedPacket, SoaAnswer, StringAnswer } from 'dns-packet';
import { DnsError, stackless } from './resolver.ts';

export type Rcode = 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED' | 'FORMERR' | 'NOTIMP' | string;

export interface SecureAnswer<T> {
  rcode: Rcode;
  /** The AD bit (RFC 4035 §3.2.3): the validating resolver checked the answer (or the denial) chain to a trust anchor. */
  secure: boolean;
  /** Answers of the asked type only, after following CNAMEs inside the answer. Read-only (shared with the cache). */
  records: T[];
  /** Seconds, min over the records (or the SOA minimum for a negative answer; 0 when unknown). Counts down on cache hits. */
  ttl: number;
  /**
   * The owner name of `records` once the CNAME chain in the answer is followed
   * (lower case, no trailing dot); the asked name when there was no CNAME. RFC 7672
   * §2.2.3: with a secure CNAME chain, the expanded name of the MX host is a TLSA
   * base domain and a reference identifier.
   */
  canonical: string;
}

export interface TlsaRecord {
  /** RFC 6698 §2.1.1: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE. */
  usage: number;
  /** RFC 6698 §2.1.2: 0 full certificate, 1 SubjectPublicKeyInfo. */
  selector: number;
  /** RFC 6698 §2.1.3: 0 exact, 1 SHA-256, 2 SHA-512. */
  matchingType: number;
  data: Buffer;
}

export interface SecureResolver {
  tlsa(name: string): Promise<SecureAnswer<TlsaRecord>>;
  mx(name: string): Promise<SecureAnswer<{ exchange: string; priority: number }>>;
  a(name: string): Promise<SecureAnswer<string>>;
  aaaa(name: string): Promise<SecureAnswer<string>>;
}

/** DNS flag day 2020: the EDNS UDP payload size that avoids fragmentation on almost every path. */
export const EDNS_UDP_SIZE = 1232;
/** Rounds over the server list, as the c-ares resolver in resolver.ts is configured. */
const TRIES = 2;
/** Bounded memory whatever the traffic; the oldest entry goes first. */
export const MAX_SECURE_CACHE_ENTRIES = 2000;
/** A positive answer is kept at most this long (s), whatever its TTL: a changed TLSA record should be seen within the hour. */
export const MAX_POSITIVE_TTL = 3600;
/**
 * A negative answer is kept at most this long (s). RFC 2308 §5 suggests up to
 * hours; a newly published TLSA record (DANE switched on) should count sooner.
 */
export const MAX_NEGATIVE_TTL = 300;
/** Longest CNAME chain followed inside one answer; resolvers stop well before. */
const MAX_CNAME_CHAIN = 16;
const DEFAULT_PORT = 53;

interface Server {
  host: string;
  port: number;
  family: 4 | 6;
}

/** "ip", "ip:port", "[ipv6]:port" or a bare IPv6 address, as `dns.servers` takes them. */
export function parseServer(s: string): Server {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracketed) return { host: bracketed[1]!, port: bracketed[2] ? Number(bracketed[2]) : DEFAULT_PORT, family: 6 };
  if (net.isIPv6(s)) return { host: s, port: DEFAULT_PORT, family: 6 };
  const v4 = /^([^:]+)(?::(\d+))?$/.exec(s);
  if (v4 && net.isIPv4(v4[1]!)) return { host: v4[1]!, port: v4[2] ? Number(v4[2]) : DEFAULT_PORT, family: 4 };
  throw new Error(`bad DNS server address: ${s}`);
}

const norm = (name: string) => name.toLowerCase().replace(/\.$/, '');

/** RFC 1035 §2.3.4: labels of 1-63 octets, 255 octets in all (253 characters in text form). Printable ASCII only: IDNs arrive as A-labels. */
function nameProblem(name: string): string | null {
  if (name === '' || name.length > 253) return 'bad length';
  if (/[^\x21-\x7e]/.test(name)) return 'not printable ASCII';
  for (const label of name.split('.')) if (label.length === 0 || label.length > 63) return 'bad label';
  return null;
}

/** What one server said: the decoded reply (its id, QR and question already checked). */
type Exchange = { reply: DecodedPacket };

class ServerFailure extends Error {}

function buildQuery(id: number, name: string, type: string): Buffer {
  return packet.encode({
    type: 'query',
    id,
    flags: packet.RECURSION_DESIRED,
    questions: [{ type: type as 'A', class: 'IN', name }],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_UDP_SIZE, extendedRcode: 0, ednsVersion: 0, flags: packet.DNSSEC_OK, flag_do: true, options: [] }],
  });
}

/** RFC 5452 §9.1: a reply is ours when id, QR and the question all match. Names compare case-insensitively (RFC 4343). */
function matches(reply: DecodedPacket, id: number, name: string, type: string): boolean {
  if (reply.id !== id || !reply.flag_qr) return false;
  const q = reply.questions ?? [];
  return q.length === 1 && norm(q[0]!.name) === name && q[0]!.type === type && (q[0]!.class ?? 'IN') === 'IN';
}

function udpExchange(server: Server, query: Buffer, id: number, name: string, type: string, timeout: number): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(server.family === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (err: Error | null, ex?: Exchange) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(ex!);
    };
    const timer = setTimeout(() => finish(new ServerFailure('TIMEOUT')), timeout);
    sock.on('error', (e) => finish(new ServerFailure(`network: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    sock.on('message', (msg, rinfo) => {
      // Only the server we asked, from the port we asked; anything else is noise or a spoofing attempt.
      if (rinfo.port !== server.port || norm(rinfo.address) !== norm(server.host)) return;
      let reply: DecodedPacket;
      try {
        reply = packet.decode(msg);
      } catch {
        return;
      }
      if (matches(reply, id, name, type)) finish(null, { reply });
    });
    sock.send(query, server.port, server.host, (e) => {
      if (e) finish(new ServerFailure(`network: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
  });
}

/** RFC 1035 §4.2.2 / RFC 7766 §8: two-octet length prefix, one query per connection. */
function tcpExchange(server: Server, query: Buffer, id: number, name: string, type: string, timeout: number): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: server.host, port: server.port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | null, ex?: Exchange) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(ex!);
    };
    const timer = setTimeout(() => finish(new ServerFailure('TIMEOUT')), timeout);
    sock.on('error', (e) => finish(new ServerFailure(`network: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    sock.on('close', () => finish(new ServerFailure('network: connection closed')));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      sock.write(Buffer.concat([len, query]));
    });
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      let reply: DecodedPacket;
      try {
        reply = packet.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      } catch {
        finish(new ServerFailure('malformed reply'));
        return;
      }
      // Our own connection: a reply that is not ours means the server is broken, not spoofed.
      if (matches(reply, id, name, type)) finish(null, { reply });
      else finish(new ServerFailure('mismatched reply'));
    });
  });
}

/** The header's rcode, with the EDNS extended bits (RFC 6891 §6.1.3) where present. */
function rcodeOf(reply: DecodedPacket): Rcode {
  const base = (reply as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR';
  const opt = reply.additionals?.find((a) => a.type === 'OPT');
  if (opt && 'extendedRcode' in opt && opt.extendedRcode !== 0) {
    return `RCODE${(opt.extendedRcode << 4) | ((reply.flags ?? 0) & 0xf)}`;
  }
  return base;
}

type Decoded<T> = Omit<SecureAnswer<T>, 'ttl'> & { ttl: number };

/**
 * The records of `type` for `name`, following CNAMEs inside the answer section
 * (RFC 1034 §4.3.2: a resolver returns the chain plus the target's records).
 */
function extract<T>(reply: DecodedPacket, name: string, type: string, convert: (a: Answer) => T | null): Decoded<T> {
  const rcode = rcodeOf(reply);
  const answers = reply.answers ?? [];
  let owner = name;
  let ttl = Infinity;
  const records: T[] = [];
  for (let hop = 0; hop <= MAX_CNAME_CHAIN; hop++) {
    const here = answers.filter((a) => a.type !== 'OPT' && norm(a.name) === owner);
    const found = here.filter((a) => a.type === type);
    if (found.length > 0) {
      for (const a of found) {
        const r = convert(a);
        if (r !== null) records.push(r);
        ttl = Math.min(ttl, (a as { ttl?: number }).ttl ?? 0);
      }
      break;
    }
    const cname = here.find((a): a is StringAnswer => a.type === 'CNAME');
    if (!cname) break;
    ttl = Math.min(ttl, cname.ttl ?? 0);
    owner = norm(cname.data);
  }
  if (records.length === 0) {
    // RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM); no SOA, no caching.
    const soa = (reply.authorities ?? []).find((a): a is SoaAnswer => a.type === 'SOA');
    ttl = soa ? Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0) : 0;
  }
  return { rcode, secure: reply.flag_ad, records, ttl: ttl === Infinity ? 0 : ttl, canonical: owner };
}

function deepFreeze<T>(answer: SecureAnswer<T>): SecureAnswer<T> {
  for (const r of answer.records) if (typeof r === 'object' && r !== null) Object.freeze(r);
  Object.freeze(answer.records);
  return Object.freeze(answer);
}

export function createSecureResolver(config: { servers: string[]; timeout: number }, opts: { now?: () => number } = {}): SecureResolver {
  const servers = config.servers.map(parseServer);
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { expires: number; answer: SecureAnswer<unknown> }>();
  const inflight = new Map<string, Promise<SecureAnswer<unknown>>>();

  /** One question to the servers in turn (see the rules at the top of this file). */
  async function ask(name: string, type: string): Promise<DecodedPacket> {
    if (servers.length === 0) throw stackless(() => new DnsError('NOSERVERS', true, `DNS ${type} lookup for ${name} failed: no dns.servers configured`));
    let fallback: DecodedPacket | null = null;
    let lastFailure = 'TIMEOUT';
    for (let round = 0; round < TRIES; round++) {
      for (const server of servers) {
        const id = randomInt(0x10000);
        const query = buildQuery(id, name, type);
        try {
          let { reply } = await udpExchange(server, query, id, name, type, config.timeout);
          if (reply.flag_tc) ({ reply } = await tcpExchange(server, query, id, name, type, config.timeout));
          const rcode = rcodeOf(reply);
          if (rcode === 'REFUSED' || rcode === 'NOTIMP') {
            fallback = reply;
            continue;
          }
          return reply;
        } catch (e) {
          if (!(e instanceof ServerFailure)) throw e;
          lastFailure = e.message;
        }
      }
      // A server that answered at all (even REFUSED) will answer the same way again.
      if (fallback) return fallback;
    }
    const code = lastFailure === 'TIMEOUT' ? 'TIMEOUT' : 'NETWORK';
    throw stackless(() => new DnsError(code, true, `DNS ${type} lookup for ${name} failed: ${lastFailure}`));
  }

  function lookup<T>(type: string, rawName: string, convert: (a: Answer) => T | null): Promise<SecureAnswer<T>> {
    const name = norm(rawName);
    const problem = nameProblem(name);
    if (problem) return Promise.reject(stackless(() => new DnsError('BADNAME', false, `DNS ${type} lookup for ${rawName} failed: ${problem}`)));
    const key = `${type} ${name}`;
    const t = now();
    const hit = cache.get(key);
    if (hit && hit.expires > t) {
      const ttl = Math.ceil((hit.expires - t) / 1000);
      return Promise.resolve({ ...(hit.answer as SecureAnswer<T>), ttl });
    }
    if (hit) cache.delete(key);
    const pending = inflight.get(key);
    if (pending) return pending as Promise<SecureAnswer<T>>;
    const p = ask(name, type).then((reply) => {
      const answer = deepFreeze(extract(reply, name, type, convert));
      const negative = answer.records.length === 0;
      const keep = answer.rcode === 'NOERROR' || answer.rcode === 'NXDOMAIN' ? Math.min(answer.ttl, negative ? MAX_NEGATIVE_TTL : MAX_POSITIVE_TTL) : 0;
      if (keep > 0) {
        if (cache.size >= MAX_SECURE_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
        cache.set(key, { expires: now() + keep * 1000, answer });
      }
      return answer;
    });
    inflight.set(key, p);
    const done = () => inflight.delete(key);
    p.then(done, done);
    return p;
  }

  return {
    tlsa: (name) =>
      lookup('TLSA', name, (a) =>
        a.type === 'TLSA' ? { usage: a.data.usage, selector: a.data.selector, matchingType: a.data.matchingType, data: Buffer.from(a.data.certificate) } : null,
      ),
    mx: (name) => lookup('MX', name, (a) => (a.type === 'MX' ? { exchange: norm(a.data.exchange), priority: a.data.preference ?? 0 } : null)),
    a: (name) => lookup('A', name, (a) => (a.type === 'A' ? a.data : null)),
    aaaa: (name) => lookup('AAAA', name, (a) => (a.type === 'AAAA' ? a.data : null)),
  };
}
