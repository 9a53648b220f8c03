// A real authoritative DNS server on loopback for tests (docs/architecture.md: "the test
// network is real"). It answers over UDP and TCP on the same ephemeral port,
// so `address` can go straight into `dns.servers`. Nothing here ever talks to
// the Internet.

import dgram from 'node:dgram';
import net from 'node:net';
import * as packet from 'dns-packet';
import type { Answer, DecodedPacket } from 'dns-packet';

export interface ZoneEntry {
  MX?: { preference: number; exchange: string }[];
  A?: string[];
  AAAA?: string[];
  /** An alias: queries for other types get the CNAME plus the target's records. */
  CNAME?: string;
  /** Host names, at a reverse name such as `1.2.0.192.in-addr.arpa` (see `reverseName` in src/policy/iprev.ts). */
  PTR?: string[];
  /** Each item is one TXT record; a string longer than 255 octets is split into several character-strings. */
  TXT?: (string | string[])[];
  SERVFAIL?: true;
  REFUSED?: true;
  /** Never answer, so the client times out. */
  TIMEOUT?: true;
  /** TTL of every record at this name, in seconds; default 300. */
  TTL?: number;
}

/** Lower-case owner names (no trailing dot) to their records. */
export type Zone = Record<string, ZoneEntry>;

export interface DnsServer {
  port: number;
  /** "127.0.0.1:PORT", in `dns.Resolver#setServers` syntax. */
  address: string;
  /** Every question received, in order (lower-cased name, type). */
  queries: { name: string; type: string }[];
  setZones(zones: Zone): void;
  close(): Promise<void>;
}

const DEFAULT_TTL = 300;
/** RFC 1035 §4.2.1: without EDNS a UDP message is at most 512 octets. */
const UDP_LIMIT = 512;
/** Longest CNAME chain followed inside the zone data before giving up. */
const MAX_CHAIN = 8;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const norm = (name: string) => name.toLowerCase().replace(/\.$/, '');

/** RFC 1035 §3.3: a character-string is at most 255 octets. */
function chunks(s: string): Buffer[] {
  const b = Buffer.from(s);
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += 255) out.push(b.subarray(i, i + 255));
  return out.length ? out : [Buffer.alloc(0)];
}

function records(owner: string, entry: ZoneEntry, type: string): Answer[] {
  const ttl = entry.TTL ?? DEFAULT_TTL;
  switch (type) {
    case 'A':
    case 'AAAA':
      return (entry[type] ?? []).map((data) => ({ type, name: owner, ttl, data }));
    case 'MX':
      // dns-packet writes '.' as the root name (a single zero octet), which is what RFC 7505 null MX needs.
      return (entry.MX ?? []).map((mx) => ({ type: 'MX', name: owner, ttl, data: mx }));
    case 'TXT':
      return (entry.TXT ?? []).map((t) => ({ type: 'TXT', name: owner, ttl, data: (Array.isArray(t) ? t : [t]).flatMap(chunks) }));
    case 'CNAME':
      return entry.CNAME ? [{ type: 'CNAME', name: owner, ttl, data: entry.CNAME }] : [];
    case 'PTR':
      return (entry.PTR ?? []).map((data) => ({ type: 'PTR', name: owner, ttl, data }));
    default:
      return [];
  }
}

/** The response to one query, or null to drop it (TIMEOUT). */
function answer(zones: Zone, query: DecodedPacket, udpLimit: number | null): Buffer | null {
  const q = query.questions?.[0];
  const base = { type: 'response' as const, id: query.id, questions: query.questions ?? [] };
  const rd = query.flag_rd ? packet.RECURSION_DESIRED : 0;
  const reply = (rcode: number, answers: Answer[] = []): Buffer => {
    const edns = query.additionals?.some((a) => a.type === 'OPT');
    // RFC 6891 §7: answer EDNS with EDNS.
    const additionals: Answer[] = edns ? [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
    const flags = packet.AUTHORITATIVE_ANSWER | rd | rcode;
    const full = packet.encode({ ...base, flags, answers, additionals });
    if (udpLimit === null || full.length <= udpLimit) return full;
    // RFC 1035 §4.2.1 / RFC 7766: too big for UDP, set TC so the client retries over TCP.
    return packet.encode({ ...base, flags: flags | packet.TRUNCATED_RESPONSE, answers: [], additionals });
  };
  if (!q || query.type !== 'query') return reply(RCODE.REFUSED);
  const answers: Answer[] = [];
  let owner = q.name;
  for (let hop = 0; hop <= MAX_CHAIN; hop++) {
    const entry = zones[norm(owner)];
    if (!entry) return reply(RCODE.NXDOMAIN, answers);
    if (entry.TIMEOUT) return null;
    if (entry.SERVFAIL) return reply(RCODE.SERVFAIL);
    if (entry.REFUSED) return reply(RCODE.REFUSED);
    // RFC 1034 §3.6.2 / §4.3.2: a CNAME owner has no other data; follow it unless CNAME itself was asked.
    if (entry.CNAME && q.type !== 'CNAME') {
      answers.push(...records(owner, entry, 'CNAME'));
      owner = entry.CNAME;
      continue;
    }
    answers.push(...records(owner, entry, q.type));
    return reply(RCODE.NOERROR, answers);
  }
  return reply(RCODE.SERVFAIL);
}

function udpLimitOf(query: DecodedPacket): number {
  const opt = query.additionals?.find((a) => a.type === 'OPT');
  return opt && 'udpPayloadSize' in opt ? Math.max(UDP_LIMIT, opt.udpPayloadSize) : UDP_LIMIT;
}

export async function startDnsServer(initial: Zone): Promise<DnsServer> {
  let zones = initial;
  const queries: { name: string; type: string }[] = [];
  const handle = (msg: Buffer, udp: boolean): Buffer | null => {
    let query: DecodedPacket;
    try {
      query = packet.decode(msg);
    } catch {
      return null; // Not DNS; a real server would drop it too.
    }
    for (const q of query.questions ?? []) queries.push({ name: norm(q.name), type: q.type });
    return answer(zones, query, udp ? udpLimitOf(query) : null);
  };

  const onUdp = (udp: dgram.Socket) => (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const out = handle(msg, true);
    if (out) udp.send(out, rinfo.port, rinfo.address);
  };
  // RFC 1035 §4.2.2 / RFC 7766 §8: over TCP each message has a two-octet length prefix, several per connection.
  const sockets = new Set<net.Socket>();
  const onTcp = (sock: net.Socket) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (data) => {
      buf = Buffer.concat([buf, data]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const out = handle(msg, false);
        if (out) {
          const len = Buffer.alloc(2);
          len.writeUInt16BE(out.length);
          sock.write(Buffer.concat([len, out]));
        }
      }
    });
  };

  // The UDP port is ephemeral; the same TCP port is usually free but not always, so try again a few times.
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    udp.on('message', onUdp(udp));
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve());
    });
    const port = udp.address().port;
    const tcp = net.createServer(onTcp);
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => resolve());
      });
    } catch (err) {
      await new Promise<void>((r) => udp.close(() => r()));
      if (attempt < 5) continue;
      throw err;
    }
    return {
      port,
      address: `127.0.0.1:${port}`,
      queries,
      setZones: (z) => {
        zones = z;
      },
      close: async () => {
        for (const s of sockets) s.destroy();
        await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
      },
    };
  }
}
