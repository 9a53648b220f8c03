// The PROXY protocol, versions 1 (text) and 2 (binary), receiving side
// (HAProxy's proxy-protocol.txt). A load balancer that forwards a TCP
// connection sends one header first that names the real client; we read it
// and then treat the connection as if it came from that client.
//
// Socket-free, like pg-protocol's parser: `push` takes whatever bytes have
// arrived, keeps a partial header between calls, and answers as soon as it
// knows — a header, more needed, or an error. Bytes after the header belong
// to SMTP (or TLS) and come back as `rest`. The listener decides who may send
// a header at all (spec §2: never accept one from an unknown peer).

import net from 'node:net';
import { expandIpv6 } from '../policy/ip.ts';

/** Spec §2.1: a v1 header is at most 107 octets, CRLF included. */
export const V1_MAX_LENGTH = 107;
/** Spec §2.2: the 12-octet v2 signature. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The fixed part of a v2 header: signature, version/command, family/protocol, 16-bit length. */
export const V2_FIXED_LENGTH = 16;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

export interface ProxyEndpoint {
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /**
   * 'proxy': `source` is the real client. 'local' (v2 LOCAL, health checks
   * by the proxy itself) and the "unknown protocol" forms (v1 UNKNOWN, v2
   * AF_UNSPEC / AF_UNIX): the spec says to use the connection's own
   * endpoints, so `source` is undefined.
   */
  command: 'proxy' | 'local';
  source?: ProxyEndpoint | undefined;
  destination?: ProxyEndpoint | undefined;
  /** Length of the header on the wire. */
  length: number;
}

export type ProxyParse =
  | { kind: 'more' }
  | { kind: 'header'; header: ProxyHeader; rest: Buffer }
  | { kind: 'error'; message: string };

export class ProxyHeaderParser {
  #buf: Buffer = Buffer.alloc(0);
  #result: ProxyParse | null = null;

  /** Feed the next chunk. After a header or an error the answer is final and later pushes repeat it. */
  push(chunk: Buffer): ProxyParse {
    if (this.#result) return this.#result;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const r = parse(this.#buf);
    if (r.kind !== 'more') {
      this.#result = r;
      this.#buf = Buffer.alloc(0);
    }
    return r;
  }
}

/** Does `buf` start like `prefix` as far as both go? */
function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.subarray(0, n).equals(prefix.subarray(0, n));
}

/** Parse a header at the start of `buf`; stateless. */
export function parse(buf: Buffer): ProxyParse {
  if (buf.length === 0) return { kind: 'more' };
  if (startsLike(buf, V2_SIGNATURE)) return buf.length < V2_SIGNATURE.length ? { kind: 'more' } : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? { kind: 'more' } : parseV1(buf);
  return { kind: 'error', message: 'no PROXY protocol header' };
}

const error = (message: string): ProxyParse => ({ kind: 'error', message });

/** A decimal port as the spec writes it: 0-65535, no leading zeros, no sign. */
function port(s: string): number | undefined {
  if (!/^(0|[1-9]\d{0,4})$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 65535 ? n : undefined;
}

// Spec §2.1: "PROXY" SP ("TCP4" | "TCP6" | "UNKNOWN") SP src SP dst SP sport SP dport CRLF,
// single spaces, UNKNOWN followed by anything up to CRLF.
function parseV1(buf: Buffer): ProxyParse {
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const b = buf[i]!;
    if (b === 0x0d) {
      end = i;
      break;
    }
    // Printable US-ASCII only; a LF without CR (or a NUL) is not a v1 header.
    if (b < 0x20 || b > 0x7e) return error('invalid character in PROXY v1 header');
  }
  if (end < 0) return buf.length >= V1_MAX_LENGTH ? error(`PROXY v1 header longer than ${V1_MAX_LENGTH} octets`) : { kind: 'more' };
  if (end + 2 > V1_MAX_LENGTH) return error(`PROXY v1 header longer than ${V1_MAX_LENGTH} octets`);
  if (end + 1 >= buf.length) return { kind: 'more' };
  if (buf[end + 1] !== 0x0a) return error('PROXY v1 header must end with CRLF');
  const length = end + 2;
  const line = buf.subarray(0, end).toString('latin1');
  const rest = buf.subarray(length);
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') {
    return { kind: 'header', header: { version: 1, command: 'local', length }, rest };
  }
  if (parts.length !== 6) return error('PROXY v1 header must have 6 fields');
  const [, proto, src = '', dst = '', sport = '', dport = ''] = parts;
  const family = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (family === 0) return error(`unknown PROXY v1 protocol ${JSON.stringify(proto)}`);
  if (net.isIP(src) !== family || net.isIP(dst) !== family) return error(`bad ${proto} address in PROXY v1 header`);
  const sp = port(sport);
  const dp = port(dport);
  if (sp === undefined || dp === undefined) return error('bad port in PROXY v1 header');
  return {
    kind: 'header',
    header: { version: 1, command: 'proxy', source: { address: src, port: sp }, destination: { address: dst, port: dp }, length },
    rest,
  };
}

// Spec §2.2: signature, then 0x2? (version 2; command 0 LOCAL, 1 PROXY), then
// family<<4 | transport, then the length of the address block and TLVs.
function parseV2(buf: Buffer): ProxyParse {
  if (buf.length < V2_FIXED_LENGTH) {
    // Refuse a bad version or command as soon as its byte is here.
    const vc = buf[12];
    if (vc !== undefined && (vc >> 4 !== 2 || (vc & 0x0f) > 1)) return error('unsupported PROXY v2 version or command');
    return { kind: 'more' };
  }
  const vc = buf[12]!;
  if (vc >> 4 !== 2) return error('unsupported PROXY v2 version');
  const cmd = vc & 0x0f;
  if (cmd > 1) return error('unknown PROXY v2 command');
  const famProto = buf[13]!;
  const len = buf.readUInt16BE(14);
  const length = V2_FIXED_LENGTH + len;
  if (buf.length < length) return { kind: 'more' };
  const block = buf.subarray(V2_FIXED_LENGTH, length);
  const rest = buf.subarray(length);
  // LOCAL: the proxy speaking for itself; the address block (if any) is ignored.
  if (cmd === 0) return { kind: 'header', header: { version: 2, command: 'local', length }, rest };
  switch (famProto) {
    case 0x00: // AF_UNSPEC: unknown protocol, use the real connection's endpoints
    case 0x31: // AF_UNIX stream: no IP to take
      return { kind: 'header', header: { version: 2, command: 'local', length }, rest };
    case 0x11: { // TCP over IPv4
      if (len < 12) return error('PROXY v2 IPv4 address block too short');
      const source = { address: ipv4(block.subarray(0, 4)), port: block.readUInt16BE(8) };
      const destination = { address: ipv4(block.subarray(4, 8)), port: block.readUInt16BE(10) };
      return { kind: 'header', header: { version: 2, command: 'proxy', source, destination, length }, rest };
    }
    case 0x21: { // TCP over IPv6
      if (len < 36) return error('PROXY v2 IPv6 address block too short');
      const source = { address: ipv6(block.subarray(0, 16)), port: block.readUInt16BE(32) };
      const destination = { address: ipv6(block.subarray(16, 32)), port: block.readUInt16BE(34) };
      return { kind: 'header', header: { version: 2, command: 'proxy', source, destination, length }, rest };
    }
    default:
      // UDP, or a family/transport pair that makes no sense for SMTP.
      return error(`unsupported PROXY v2 family/protocol 0x${famProto.toString(16).padStart(2, '0')}`);
  }
}

function ipv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text form (via node's own formatting of a SocketAddress). */
function ipv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/** Encoders, for tests and for anyone who wants to speak PROXY to Tern. */
export function encodeV1(source: ProxyEndpoint | null, destination?: ProxyEndpoint): Buffer {
  if (!source || !destination) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const proto = net.isIPv6(source.address) ? 'TCP6' : 'TCP4';
  return Buffer.from(`PROXY ${proto} ${source.address} ${destination.address} ${source.port} ${destination.port}\r\n`, 'latin1');
}

export function encodeV2(source: ProxyEndpoint | null, destination?: ProxyEndpoint, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  if (!source || !destination) {
    const head = Buffer.alloc(V2_FIXED_LENGTH);
    V2_SIGNATURE.copy(head);
    head[12] = 0x20; // LOCAL
    head[13] = 0x00;
    head.writeUInt16BE(tlvs.length, 14);
    return Buffer.concat([head, tlvs]);
  }
  const v6 = net.isIPv6(source.address);
  const addrLen = v6 ? 36 : 12;
  const out = Buffer.alloc(V2_FIXED_LENGTH + addrLen);
  V2_SIGNATURE.copy(out);
  out[12] = 0x21; // version 2, PROXY
  out[13] = v6 ? 0x21 : 0x11;
  out.writeUInt16BE(addrLen + tlvs.length, 14);
  const a = ipBytes(source.address);
  const b = ipBytes(destination.address);
  a.copy(out, 16);
  b.copy(out, 16 + a.length);
  out.writeUInt16BE(source.port, 16 + 2 * a.length);
  out.writeUInt16BE(destination.port, 18 + 2 * a.length);
  return Buffer.concat([out, tlvs]);
}

function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  const out = Buffer.alloc(16);
  expandIpv6(ip).forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
