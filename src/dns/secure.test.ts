import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import * as packet from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer } from 'dns-packet';
import { DnsError } from './resolver.ts';
import { createSecureResolver, parseServer, EDNS_UDP_SIZE, MAX_NEGATIVE_TTL } from './secure.ts';
import { requireDnssecTools, startSignedDns, type SignedDns } from '../../test/helpers/dnssec.ts';

// ---------------------------------------------------------------------------
// Byte level: a loopback server scripted per test with dns-packet.

type Script = (q: DecodedPacket, proto: 'udp' | 'tcp') => Buffer[];

interface Scripted {
  address: string;
  port: number;
  queries: { q: DecodedPacket; proto: 'udp' | 'tcp' }[];
  script: Script;
  close(): Promise<void>;
}

/** A UDP and TCP server on one loopback port that answers each query with whatever `script` returns (nothing: a timeout). */
async function startScripted(): Promise<Scripted> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const port = udp.address().port;
    const sockets = new Set<net.Socket>();
    const s: Scripted = {
      address: `127.0.0.1:${port}`,
      port,
      queries: [],
      script: () => [],
      close: async () => {
        for (const c of sockets) c.destroy();
        await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
      },
    };
    udp.on('message', (msg, rinfo) => {
      const q = packet.decode(msg);
      s.queries.push({ q, proto: 'udp' });
      for (const out of s.script(q, 'udp')) udp.send(out, rinfo.port, rinfo.address);
    });
    const tcp = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      let buf = Buffer.alloc(0);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const q = packet.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)));
          buf = buf.subarray(2 + buf.readUInt16BE(0));
          s.queries.push({ q, proto: 'tcp' });
          for (const out of s.script(q, 'tcp')) {
            const len = Buffer.alloc(2);
            len.writeUInt16BE(out.length);
            sock.write(Buffer.concat([len, out]));
          }
        }
      });
    });
    try {
      await new Promise<void>((resolve, reject) => tcp.once('error', reject).listen(port, '127.0.0.1', resolve));
      return s;
    } catch (e) {
      await new Promise<void>((r) => udp.close(() => r()));
      if (attempt > 5) throw e;
    }
  }
}

const RCODES: Record<string, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };

/** A reply to `q`, echoing id and question; `ad` sets the AD bit (RFC 4035 §3.2.3). */
function reply(q: DecodedPacket, opts: { ad?: boolean; tc?: boolean; rcode?: string; answers?: Answer[]; authorities?: Answer[]; id?: number; questions?: DecodedPacket['questions'] } = {}): Buffer {
  const flags = packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | (opts.ad ? packet.AUTHENTIC_DATA : 0) | (opts.tc ? packet.TRUNCATED_RESPONSE : 0) | RCODES[opts.rcode ?? 'NOERROR']!;
  return packet.encode({
    type: 'response',
    id: opts.id ?? q.id,
    flags,
    questions: opts.questions ?? q.questions,
    answers: opts.answers ?? [],
    authorities: opts.authorities ?? [],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: packet.DNSSEC_OK, flag_do: true, options: [] }],
  });
}

const qname = (q: DecodedPacket) => q.questions![0]!.name;
const soa = (zone: string, ttl: number, minimum: number): Answer => ({
  type: 'SOA', name: zone, ttl, data: { mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
});
const DIGEST = Buffer.alloc(32, 0xab);

describe('byte level, against a scripted server', () => {
  let srv: Scripted;
  let other: Scripted;
  before(async () => {
    [srv, other] = await Promise.all([startScripted(), startScripted()]);
  });
  after(async () => {
    await Promise.all([srv.close(), other.close()]);
  });
  const fresh = (servers = [srv.address], timeout = 300, now?: () => number) => {
    srv.queries.length = 0;
    other.queries.length = 0;
    return createSecureResolver({ servers, timeout }, now ? { now } : {});
  };

  test('the query: RD, EDNS0 with the DO bit and a 1232-octet payload, no CD, random ids', async () => {
    srv.script = (q) => [reply(q, { ad: true, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '192.0.2.1' }] })];
    const r = fresh();
    await Promise.all(['a1.test', 'a2.test', 'a3.test', 'a4.test'].map((n) => r.a(n)));
    assert.equal(srv.queries.length, 4);
    for (const { q, proto } of srv.queries) {
      assert.equal(proto, 'udp');
      assert.equal(q.flag_rd, true);
      assert.equal(q.flag_cd, false);
      assert.equal(q.flag_qr, false);
      const opt = q.additionals?.find((a): a is OptAnswer => a.type === 'OPT');
      assert.ok(opt, 'EDNS0 OPT record');
      assert.equal(opt.flag_do, true);
      assert.equal(opt.udpPayloadSize, EDNS_UDP_SIZE);
    }
    assert.ok(new Set(srv.queries.map(({ q }) => q.id)).size > 1, 'ids vary');
  });

  test('the AD bit is read: secure and insecure answers', async () => {
    const r = fresh();
    srv.script = (q) => [reply(q, { ad: qname(q).startsWith('secure'), answers: [{ type: 'A', name: qname(q), ttl: 60, data: '192.0.2.1' }] })];
    const s = await r.a('secure.test');
    assert.equal(s.secure, true);
    assert.deepEqual(s.records, ['192.0.2.1']);
    const i = await r.a('insecure.test');
    assert.equal(i.secure, false);
    assert.deepEqual(i.records, ['192.0.2.1']);
  });

  test('TLSA, MX, AAAA records; the TTL is the smallest', async () => {
    srv.script = (q) => {
      const name = qname(q);
      const type = q.questions![0]!.type;
      const answers: Answer[] =
        type === 'TLSA' ? [
          { type: 'TLSA', name, ttl: 300, data: { usage: 3, selector: 1, matchingType: 1, certificate: DIGEST } },
          { type: 'TLSA', name, ttl: 120, data: { usage: 2, selector: 0, matchingType: 1, certificate: DIGEST } },
        ]
        : type === 'MX' ? [{ type: 'MX', name, ttl: 600, data: { preference: 10, exchange: 'MX.Example.Test' } }]
        : [{ type: 'AAAA', name, ttl: 30, data: '2001:db8::1' }];
      return [reply(q, { ad: true, answers })];
    };
    const r = fresh();
    const t = await r.tlsa('_25._tcp.mx.example.test');
    assert.deepEqual(t.records, [{ usage: 3, selector: 1, matchingType: 1, data: DIGEST }, { usage: 2, selector: 0, matchingType: 1, data: DIGEST }]);
    assert.equal(t.ttl, 120);
    assert.equal(t.rcode, 'NOERROR');
    assert.equal(t.canonical, '_25._tcp.mx.example.test');
    assert.deepEqual((await r.mx('example.test')).records, [{ exchange: 'mx.example.test', priority: 10 }]);
    assert.deepEqual((await r.aaaa('example.test')).records, ['2001:db8::1']);
  });

  test('CNAMEs inside the answer are followed: records of the target, its name, the chain in the TTL', async () => {
    srv.script = (q) => [reply(q, {
      ad: true,
      answers: [
        // Out of order on purpose: the chain is followed by name, not by position.
        { type: 'A', name: 'real.example.test', ttl: 300, data: '192.0.2.7' },
        { type: 'CNAME', name: 'alias.example.test', ttl: 40, data: 'middle.example.test' },
        { type: 'A', name: 'unrelated.example.test', ttl: 300, data: '192.0.2.99' },
        { type: 'CNAME', name: 'middle.example.test', ttl: 500, data: 'Real.Example.Test' },
      ],
    })];
    const a = await fresh().a('Alias.Example.Test.');
    assert.deepEqual(a.records, ['192.0.2.7']);
    assert.equal(a.canonical, 'real.example.test');
    assert.equal(a.ttl, 40);
  });

  test('negative answers: NXDOMAIN and NODATA, TTL from the SOA (RFC 2308 §5)', async () => {
    srv.script = (q) => [reply(q, { ad: true, rcode: qname(q).startsWith('nx') ? 'NXDOMAIN' : 'NOERROR', authorities: [soa('example.test', 900, 60)] })];
    const r = fresh();
    const nx = await r.tlsa('nx.example.test');
    assert.deepEqual({ rcode: nx.rcode, secure: nx.secure, records: nx.records, ttl: nx.ttl }, { rcode: 'NXDOMAIN', secure: true, records: [], ttl: 60 });
    const nodata = await r.tlsa('nodata.example.test');
    assert.deepEqual({ rcode: nodata.rcode, records: nodata.records, ttl: nodata.ttl }, { rcode: 'NOERROR', records: [], ttl: 60 });
    srv.script = (q) => [reply(q, { rcode: 'NXDOMAIN' })];
    assert.equal((await r.tlsa('nx-without-soa.example.test')).ttl, 0);
  });

  test('SERVFAIL (bogus data, RFC 4035 §5.5) is an answer, not an error, and is not cached', async () => {
    srv.script = (q) => [reply(q, { rcode: 'SERVFAIL' })];
    const r = fresh();
    const a = await r.tlsa('_25._tcp.bogus.test');
    assert.deepEqual({ rcode: a.rcode, secure: a.secure, records: a.records }, { rcode: 'SERVFAIL', secure: false, records: [] });
    await r.tlsa('_25._tcp.bogus.test');
    assert.equal(srv.queries.length, 2);
  });

  test('a truncated UDP reply is asked again over TCP (RFC 7766 §5)', async () => {
    srv.script = (q, proto) => [proto === 'udp' ? reply(q, { tc: true, ad: true }) : reply(q, { ad: true, answers: [{ type: 'TLSA', name: qname(q), ttl: 60, data: { usage: 3, selector: 1, matchingType: 1, certificate: DIGEST } }] })];
    const t = await fresh().tlsa('_25._tcp.big.test');
    assert.deepEqual(srv.queries.map((x) => x.proto), ['udp', 'tcp']);
    assert.equal(t.secure, true);
    assert.equal(t.records.length, 1);
    assert.equal(srv.queries[0]!.q.id, srv.queries[1]!.q.id);
  });

  test('a reply with the wrong id, question or without QR is ignored; the right one still counts (RFC 5452 §9.1)', async () => {
    srv.script = (q) => [
      reply(q, { id: (q.id! + 1) & 0xffff, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '203.0.113.66' }] }),
      reply(q, { questions: [{ type: 'A', class: 'IN', name: 'evil.test' }], answers: [{ type: 'A', name: 'evil.test', ttl: 60, data: '203.0.113.66' }] }),
      reply(q, { questions: [{ type: 'AAAA', class: 'IN', name: qname(q) }] }),
      packet.encode({ type: 'query', id: q.id, flags: 0, questions: q.questions, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '203.0.113.66' }] }),
      reply(q, { ad: true, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '192.0.2.1' }] }),
    ];
    const a = await fresh().a('spoofed.test');
    assert.deepEqual(a.records, ['192.0.2.1']);
    assert.equal(a.secure, true);
  });

  test('only wrong replies: a timeout, then DnsError TIMEOUT (temporary)', async () => {
    srv.script = (q) => [reply(q, { id: (q.id! + 1) & 0xffff })];
    const started = performance.now();
    await assert.rejects(fresh([srv.address], 150).a('x.test'), (e: unknown) => e instanceof DnsError && e.code === 'TIMEOUT' && e.temporary && /x\.test/.test(e.message));
    const took = performance.now() - started;
    // Two rounds over the one server.
    assert.equal(srv.queries.length, 2);
    assert.ok(took >= 290 && took < 1500, `took ${took} ms`);
  });

  test('a silent server: the next one answers; all silent: DnsError', async () => {
    srv.script = () => [];
    other.script = (q) => [reply(q, { ad: true, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '192.0.2.2' }] })];
    const a = await fresh([srv.address, other.address], 150).a('next.test');
    assert.deepEqual(a.records, ['192.0.2.2']);
    assert.equal(srv.queries.length, 1);
    other.script = () => [];
    await assert.rejects(fresh([srv.address, other.address], 100).a('none.test'), (e: unknown) => e instanceof DnsError && e.temporary);
    assert.equal(srv.queries.length + other.queries.length, 4);
  });

  test('REFUSED moves on to the next server, and is the answer when every server refuses', async () => {
    srv.script = (q) => [reply(q, { rcode: 'REFUSED' })];
    other.script = (q) => [reply(q, { ad: true, answers: [{ type: 'A', name: qname(q), ttl: 60, data: '192.0.2.3' }] })];
    assert.deepEqual((await fresh([srv.address, other.address]).a('refused.test')).records, ['192.0.2.3']);
    other.script = (q) => [reply(q, { rcode: 'REFUSED' })];
    const r = await fresh([srv.address, other.address]).a('refused.test');
    assert.equal(r.rcode, 'REFUSED');
    // A server that answers at all is not asked a second round.
    assert.equal(srv.queries.length + other.queries.length, 2);
  });

  test('a closed port: DnsError, not a hang', async () => {
    const r = createSecureResolver({ servers: ['127.0.0.1:1'], timeout: 100 });
    await assert.rejects(r.a('closed.test'), (e: unknown) => e instanceof DnsError && e.temporary);
  });

  test('cache: positive answers for their TTL, the TTL counts down, then asked again', async () => {
    let clock = 1_000_000;
    srv.script = (q) => [reply(q, { ad: true, answers: [{ type: 'TLSA', name: qname(q), ttl: 100, data: { usage: 3, selector: 1, matchingType: 1, certificate: DIGEST } }] })];
    const r = fresh([srv.address], 300, () => clock);
    const first = await r.tlsa('_25._tcp.cached.test');
    clock += 40_000;
    const second = await r.tlsa('_25._TCP.Cached.Test.');
    assert.equal(srv.queries.length, 1);
    assert.equal(second.ttl, 60);
    assert.equal(second.secure, true);
    assert.deepEqual(second.records, first.records);
    assert.ok(Object.isFrozen(second.records), 'cached records are shared, so read-only');
    clock += 61_000;
    await r.tlsa('_25._tcp.cached.test');
    assert.equal(srv.queries.length, 2);
  });

  test('cache: negative answers too, capped at MAX_NEGATIVE_TTL', async () => {
    let clock = 0;
    srv.script = (q) => [reply(q, { ad: true, rcode: 'NXDOMAIN', authorities: [soa('example.test', 86400, 86400)] })];
    const r = fresh([srv.address], 300, () => clock);
    assert.equal((await r.tlsa('_25._tcp.nx.test')).ttl, 86400);
    clock += (MAX_NEGATIVE_TTL - 1) * 1000;
    assert.equal((await r.tlsa('_25._tcp.nx.test')).rcode, 'NXDOMAIN');
    assert.equal(srv.queries.length, 1);
    clock += 2000;
    await r.tlsa('_25._tcp.nx.test');
    assert.equal(srv.queries.length, 2);
  });

  test('single flight: concurrent lookups of one (name, type) share one query; other types do not', async () => {
    srv.script = (q) => [reply(q, { ad: true, answers: q.questions![0]!.type === 'A' ? [{ type: 'A', name: qname(q), ttl: 0, data: '192.0.2.4' }] : [] })];
    const r = fresh();
    const answers = await Promise.all([r.a('flight.test'), r.a('FLIGHT.test.'), r.a('flight.test'), r.aaaa('flight.test')]);
    assert.equal(srv.queries.length, 2);
    assert.deepEqual(answers.slice(0, 3).map((a) => a.records), [['192.0.2.4'], ['192.0.2.4'], ['192.0.2.4']]);
    // TTL 0: nothing cached, so the next lookup asks again.
    await r.a('flight.test');
    assert.equal(srv.queries.length, 3);
  });

  test('a malformed name is a permanent DnsError without a query', async () => {
    const r = fresh();
    for (const bad of ['', 'a..b', `${'x'.repeat(64)}.test`, 'bad name.test', 'ü.test']) {
      await assert.rejects(r.tlsa(bad), (e: unknown) => e instanceof DnsError && e.code === 'BADNAME' && !e.temporary, bad);
    }
    assert.equal(srv.queries.length, 0);
  });
});

test('parseServer: the dns.servers forms', () => {
  assert.deepEqual(parseServer('127.0.0.1'), { host: '127.0.0.1', port: 53, family: 4 });
  assert.deepEqual(parseServer('127.0.0.1:5300'), { host: '127.0.0.1', port: 5300, family: 4 });
  assert.deepEqual(parseServer('[::1]:5300'), { host: '::1', port: 5300, family: 6 });
  assert.deepEqual(parseServer('[::1]'), { host: '::1', port: 53, family: 6 });
  assert.deepEqual(parseServer('2001:db8::53'), { host: '2001:db8::53', port: 53, family: 6 });
  assert.throws(() => parseServer('resolver.example'));
});

// ---------------------------------------------------------------------------
// The real thing: unbound validating zones nsd serves (test/helpers/dnssec.ts).

const skipReal = requireDnssecTools();

describe('against nsd + unbound', { skip: skipReal }, () => {
  let dns: SignedDns;
  const TLSA = `3 1 1 ${DIGEST.toString('hex')}`;
  before(async () => {
    dns = await startSignedDns({
      'secure.test': { kind: 'signed', records: ['@ IN MX 10 mx', 'mx IN A 127.0.0.1', 'mx IN AAAA ::1', `_25._tcp.mx IN TLSA ${TLSA}`, 'alias IN CNAME mx'] },
      'insecure.test': { kind: 'unsigned', records: ['@ IN MX 10 mx', 'mx IN A 127.0.0.2', `_25._tcp.mx IN TLSA ${TLSA}`] },
      'bogus.test': { kind: 'bogus', bogus: ['TLSA'], records: ['@ IN MX 10 mx', 'mx IN A 127.0.0.3', `_25._tcp.mx IN TLSA ${TLSA}`] },
    });
  });
  after(async () => {
    await dns?.close();
  });
  const resolver = () => createSecureResolver({ servers: [dns.resolver], timeout: 2000 });

  test('a signed zone: TLSA, MX, A, AAAA secure', async () => {
    const r = resolver();
    const t = await r.tlsa('_25._tcp.mx.secure.test');
    assert.equal(t.secure, true);
    assert.deepEqual(t.records, [{ usage: 3, selector: 1, matchingType: 1, data: DIGEST }]);
    assert.equal(t.ttl, 300);
    const mx = await r.mx('secure.test');
    assert.deepEqual({ secure: mx.secure, records: mx.records }, { secure: true, records: [{ exchange: 'mx.secure.test', priority: 10 }] });
    assert.deepEqual((await r.a('mx.secure.test')).records, ['127.0.0.1']);
    assert.deepEqual((await r.aaaa('mx.secure.test')).records, ['::1']);
  });

  test('a signed zone: a CNAME chain, secure, with its canonical name (RFC 7672 §2.2.3)', async () => {
    const a = await resolver().a('alias.secure.test');
    assert.deepEqual({ secure: a.secure, records: a.records, canonical: a.canonical }, { secure: true, records: ['127.0.0.1'], canonical: 'mx.secure.test' });
  });

  test('a signed zone: no TLSA (NXDOMAIN, NODATA) is a secure denial with the SOA minimum as TTL', async () => {
    const r = resolver();
    const nx = await r.tlsa('_25._tcp.nope.secure.test');
    assert.deepEqual({ rcode: nx.rcode, secure: nx.secure, records: nx.records, ttl: nx.ttl }, { rcode: 'NXDOMAIN', secure: true, records: [], ttl: 60 });
    const nodata = await r.tlsa('mx.secure.test');
    assert.deepEqual({ rcode: nodata.rcode, secure: nodata.secure, records: nodata.records }, { rcode: 'NOERROR', secure: true, records: [] });
  });

  test('an unsigned zone: records, not secure', async () => {
    const t = await resolver().tlsa('_25._tcp.mx.insecure.test');
    assert.deepEqual({ rcode: t.rcode, secure: t.secure, n: t.records.length }, { rcode: 'NOERROR', secure: false, n: 1 });
  });

  test('bogus TLSA signatures: SERVFAIL, while the MX stays secure', async () => {
    const r = resolver();
    const t = await r.tlsa('_25._tcp.mx.bogus.test');
    assert.deepEqual({ rcode: t.rcode, secure: t.secure, records: t.records }, { rcode: 'SERVFAIL', secure: false, records: [] });
    assert.equal((await r.mx('bogus.test')).secure, true);
  });
});
