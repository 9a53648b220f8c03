// A real DNSSEC-validating resolver on loopback for DANE tests (issue 15,
// docs/architecture.md: "the test network is real"): Debian's nsd serves the
// test zones, signed at test time with ldns-keygen/ldns-signzone, and a private
// unbound validates them against trust anchors given in its configuration.
// Tern asks unbound (`resolver`) and sees the AD bit, SERVFAIL for bogus data,
// and secure denials, exactly as it would in production.
//
// Nothing leaves loopback: unbound knows only stub zones pointing at our nsd,
// sends from 127.0.0.1 only (so a packet for any other address cannot be
// routed), and refuses every name outside the test zones at once instead of
// trying the root servers. Both daemons run in the foreground as children of
// the test process, with every file (configuration, zones, keys, logs, pid and
// control sockets) in one temporary directory that `close` removes.
//
// Tests guard with `requireDnssecTools()`: requireTool (test/helpers/tools.ts)
// for nsd, unbound and ldns-signzone, found in PATH or in /usr/sbin.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';
import type { DecodedPacket, SoaAnswer } from 'dns-packet';
import { freePort } from './server.ts';
import { findExecutable, requireTool } from './tools.ts';

const run = promisify(execFile);

export type ZoneKind = 'signed' | 'unsigned' | 'bogus';

export interface ZoneSpec {
  kind: ZoneKind;
  /** Zone-file lines, owner names relative to the zone or absolute, e.g. 'mx IN A 127.0.0.1'. SOA and NS are added. */
  records: string[];
  /**
   * For 'bogus' zones: the record types whose signatures are corrupted. Default:
   * every type but DNSKEY, so every name in the zone is bogus (SERVFAIL). ['TLSA']
   * keeps MX and address lookups secure and makes only the TLSA answers bogus.
   */
  bogus?: string[];
}

export interface SignedDns {
  /** The validating resolver (unbound) as "127.0.0.1:PORT", for dns.servers. */
  resolver: string;
  /** The authoritative server (nsd) as "127.0.0.1:PORT": answers without validation. */
  authoritative: string;
  /** How long starting both daemons took until both answered (ms). */
  startupMs: number;
  /** Replace a zone's records (re-sign if signed) and reload the authoritative server; resolver cache flushed. */
  setZone(zone: string, records: string[]): Promise<void>;
  /** The last `bytes` of unbound's log (val-log-level 2 names the reason for each bogus answer). */
  resolverLog(bytes?: number): string;
  close(): Promise<void>;
}

/** Signatures valid from a day ago (clock skew between processes is no issue) for 30 days. */
const SIG_INCEPTION_MS = -86_400_000;
const SIG_EXPIRATION_MS = 30 * 86_400_000;
/** Default TTL in the zones; SOA minimum (negative answers) is shorter. */
const ZONE_TTL = 300;
const NEGATIVE_TTL = 60;
/** Both daemons normally answer within half a second; this is the give-up point. */
const STARTUP_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 200;

const norm = (zone: string) => zone.toLowerCase().replace(/\.$/, '');

/** A program by name: from PATH, else from /usr/sbin, where Debian puts the daemons (often not in a non-root PATH). */
function tool(name: string): string {
  return findExecutable(name) ?? findExecutable(`/usr/sbin/${name}`) ?? name;
}

/** The skip reason when nsd, unbound or ldnsutils is missing (an error under CI); false when all are there. */
export function requireDnssecTools(): string | false {
  return requireTool(tool('nsd'), 'nsd') || requireTool(tool('unbound'), 'unbound') || requireTool(tool('ldns-signzone'), 'ldnsutils');
}

/** One UDP question; null on timeout. Only for readiness checks: no retries, no TCP. */
async function probe(port: number, name: string, type: 'SOA'): Promise<DecodedPacket | null> {
  const sock = dgram.createSocket('udp4');
  const id = randomInt(0x10000);
  try {
    return await new Promise<DecodedPacket | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), PROBE_TIMEOUT_MS);
      sock.on('error', () => {
        clearTimeout(timer);
        resolve(null);
      });
      sock.on('message', (msg) => {
        try {
          const reply = packet.decode(msg);
          if (reply.id !== id) return;
          clearTimeout(timer);
          resolve(reply);
        } catch {
          // not for us
        }
      });
      sock.send(packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type, class: 'IN', name }] }), port, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

function serialOf(reply: DecodedPacket | null): number | undefined {
  const soa = reply?.answers?.find((a): a is SoaAnswer => a.type === 'SOA');
  return soa?.data.serial;
}

/** YYYYMMDDHHMMSS in UTC, ldns-signzone's date form. */
function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/**
 * Break the signature of every RRSIG covering one of `types` (or every type
 * but DNSKEY): one bit flipped in the middle of the signature, so the record
 * still parses but no longer verifies (RFC 4035 §5.3.3) and the validator
 * calls the data bogus (§5.5).
 */
function corrupt(signedZone: string, types: string[] | undefined): string {
  const wanted = types?.map((t) => t.toUpperCase());
  return signedZone
    .split('\n')
    .map((line) => {
      const f = line.split(/\s+/);
      // owner TTL class RRSIG covered algorithm labels original-TTL expiration inception key-tag signer signature
      const at = f.indexOf('RRSIG');
      if (at < 0 || f.length < at + 10) return line;
      const covered = f[at + 1]!.toUpperCase();
      if (wanted ? !wanted.includes(covered) : covered === 'DNSKEY') return line;
      const sig = Buffer.from(f.slice(at + 9).join(''), 'base64');
      sig[sig.length >> 1]! ^= 0x01;
      return [...f.slice(0, at + 9), sig.toString('base64')].join('\t');
    })
    .join('\n');
}

interface ZoneState {
  name: string;
  spec: ZoneSpec;
  serial: number;
  /** The ldns key's base name (signed and bogus zones). */
  key?: string;
  /** "zone. DS keytag algorithm digest-type digest", for unbound's trust-anchor. */
  ds?: string;
}

/**
 * zones: zone name → records in zone-file syntax, relative or absolute owner names, e.g. 'mx IN A 127.0.0.1'.
 * Each zone is 'signed' (ldns-keygen + ldns-signzone, trust anchor given to unbound), 'unsigned' (unbound: domain-insecure) or 'bogus' (signed, then an RRSIG corrupted so validation fails).
 */
export async function startSignedDns(zones: Record<string, ZoneSpec>): Promise<SignedDns> {
  const started = performance.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dnssec-'));
  const children: ChildProcess[] = [];
  const killAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  };
  // If the test process dies without `close`, the daemons must not outlive it.
  process.on('exit', killAll);

  const stop = async () => {
    process.off('exit', killAll);
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }),
    );
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    const state = new Map<string, ZoneState>();
    for (const [raw, spec] of Object.entries(zones)) state.set(norm(raw), { name: norm(raw), spec, serial: 1 });

    // One key per signed zone, used as both KSK and ZSK (a "CSK"): the zone is
    // its own trust anchor, so a key split would only add files.
    await Promise.all(
      [...state.values()].filter((z) => z.spec.kind !== 'unsigned').map(async (z) => {
        const { stdout } = await run(tool('ldns-keygen'), ['-a', 'ECDSAP256SHA256', '-k', `${z.name}.`], { cwd: dir });
        z.key = path.join(dir, stdout.trim());
        const ds = fs.readFileSync(`${z.key}.ds`, 'utf8').trim().split(/\s+/);
        // "zone. IN DS tag alg type digest" (ldns may add a TTL; the DS fields are the last four).
        z.ds = `${z.name}. DS ${ds.slice(-4).join(' ')}`;
      }),
    );

    const zoneFile = (z: ZoneState) => path.join(dir, `${z.name}.zone`);
    const servedFile = (z: ZoneState) => (z.spec.kind === 'unsigned' ? zoneFile(z) : `${zoneFile(z)}.signed`);

    const writeZone = async (z: ZoneState) => {
      const ownsNs = z.spec.records.some((r) => /^ns(\s|\.?$)/i.test(r) || r.toLowerCase().startsWith(`ns.${z.name}.`));
      const lines = [
        `$ORIGIN ${z.name}.`,
        `$TTL ${ZONE_TTL}`,
        `@ IN SOA ns.${z.name}. hostmaster.${z.name}. ${z.serial} 3600 600 86400 ${NEGATIVE_TTL}`,
        `@ IN NS ns.${z.name}.`,
        ...(ownsNs ? [] : ['ns IN A 127.0.0.1']),
        ...z.spec.records,
        '',
      ];
      fs.writeFileSync(zoneFile(z), lines.join('\n'));
      if (z.spec.kind === 'unsigned') return;
      const now = Date.now();
      await run(tool('ldns-signzone'), ['-i', stamp(now + SIG_INCEPTION_MS), '-e', stamp(now + SIG_EXPIRATION_MS), '-o', `${z.name}.`, '-f', servedFile(z), zoneFile(z), z.key!]);
      if (z.spec.kind === 'bogus') fs.writeFileSync(servedFile(z), corrupt(fs.readFileSync(servedFile(z), 'utf8'), z.spec.bogus));
    };
    await Promise.all([...state.values()].map(writeZone));

    const [authPort, resolverPort] = await Promise.all([freePort(), freePort()]);
    const nsdConf = path.join(dir, 'nsd.conf');
    const unboundConf = path.join(dir, 'unbound.conf');
    const q = (s: string) => JSON.stringify(s);
    fs.writeFileSync(nsdConf, [
      'server:',
      `  ip-address: 127.0.0.1@${authPort}`,
      '  do-ip6: no',
      '  username: ""',
      '  chroot: ""',
      `  zonesdir: ${q(dir)}`,
      '  database: ""',
      `  pidfile: ${q(path.join(dir, 'nsd.pid'))}`,
      `  xfrdfile: ${q(path.join(dir, 'xfrd.state'))}`,
      `  zonelistfile: ${q(path.join(dir, 'zone.list'))}`,
      `  xfrdir: ${q(dir)}`,
      '  server-count: 1',
      '  verbosity: 1',
      '  hide-version: yes',
      'remote-control:',
      '  control-enable: yes',
      `  control-interface: ${q(path.join(dir, 'nsd.ctl'))}`,
      ...[...state.values()].flatMap((z) => ['zone:', `  name: "${z.name}."`, `  zonefile: ${q(servedFile(z))}`]),
      '',
    ].join('\n'));
    fs.writeFileSync(unboundConf, [
      'server:',
      '  interface: 127.0.0.1',
      `  port: ${resolverPort}`,
      '  do-ip6: no',
      '  do-daemonize: no',
      '  username: ""',
      '  chroot: ""',
      `  directory: ${q(dir)}`,
      `  pidfile: ${q(path.join(dir, 'unbound.pid'))}`,
      '  use-syslog: no',
      '  logfile: ""',
      '  verbosity: 1',
      '  val-log-level: 2',
      '  num-threads: 1',
      '  outgoing-range: 64',
      '  num-queries-per-thread: 32',
      '  so-reuseport: no',
      '  access-control: 127.0.0.0/8 allow',
      // Our nsd is on loopback, which unbound refuses to ask by default.
      '  do-not-query-localhost: no',
      // Loopback only, both ways: queries leave from 127.0.0.1, so nothing can be routed off the host,
      // and names outside the test zones are refused at once instead of sent to the root servers.
      '  outgoing-interface: 127.0.0.1',
      '  local-zone: "." refuse',
      '  module-config: "validator iterator"',
      '  qname-minimisation: no',
      '  aggressive-nsec: no',
      '  prefetch: no',
      '  trust-anchor-signaling: no',
      '  root-key-sentinel: no',
      ...[...state.values()].flatMap((z) => [
        `  local-zone: "${z.name}." transparent`,
        ...(z.ds ? [`  trust-anchor: ${q(z.ds)}`] : [`  domain-insecure: "${z.name}."`]),
      ]),
      'remote-control:',
      '  control-enable: yes',
      `  control-interface: ${q(path.join(dir, 'unbound.ctl'))}`,
      '  control-use-cert: no',
      ...[...state.values()].flatMap((z) => ['stub-zone:', `  name: "${z.name}."`, `  stub-addr: 127.0.0.1@${authPort}`]),
      '',
    ].join('\n'));

    const logFile = (name: string) => path.join(dir, `${name}.log`);
    const tail = (name: string, bytes = 4000) => {
      try {
        const text = fs.readFileSync(logFile(name), 'utf8');
        return text.slice(-bytes);
      } catch {
        return '';
      }
    };
    let exitError: Error | null = null;
    const daemon = (name: string, command: string, args: string[]) => {
      const out = fs.openSync(logFile(name), 'a');
      const child = spawn(command, args, { stdio: ['ignore', out, out] });
      fs.closeSync(out);
      children.push(child);
      child.on('error', (e) => (exitError ??= new Error(`${name}: ${e.message}`)));
      child.on('exit', (code, signal) => (exitError ??= new Error(`${name} exited (${signal ?? code}) during start-up:\n${tail(name)}`)));
    };
    daemon('nsd', tool('nsd'), ['-d', '-c', nsdConf]);
    daemon('unbound', tool('unbound'), ['-d', '-c', unboundConf]);

    /** Poll until `ready` holds; a daemon that exits, or the deadline, ends the wait with its log. */
    const waitFor = async (what: string, ready: () => Promise<boolean>) => {
      const deadline = performance.now() + STARTUP_TIMEOUT_MS;
      for (;;) {
        if (exitError) throw exitError;
        if (await ready()) return;
        if (performance.now() > deadline) throw new Error(`${what} did not answer within ${STARTUP_TIMEOUT_MS} ms:\n${tail('nsd')}\n${tail('unbound')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const names = [...state.keys()];
    await waitFor('nsd', async () => (await Promise.all(names.map((n) => probe(authPort, n, 'SOA')))).every((r) => (r as { rcode?: string } | null)?.rcode === 'NOERROR'));
    // Any reply from unbound will do: a bogus zone's SOA is SERVFAIL by design.
    await waitFor('unbound', async () => (await probe(resolverPort, names[0] ?? 'invalid', 'SOA')) !== null);
    // From here on an exit is a crash the tests will notice themselves.
    for (const c of children) c.removeAllListeners('exit');

    const control = (program: 'nsd-control' | 'unbound-control', conf: string, ...args: string[]) => run(tool(program), ['-c', conf, ...args]);
    let chain = Promise.resolve();
    return {
      resolver: `127.0.0.1:${resolverPort}`,
      authoritative: `127.0.0.1:${authPort}`,
      startupMs: Math.round(performance.now() - started),
      resolverLog: (bytes) => tail('unbound', bytes),
      setZone(zone, records) {
        const z = state.get(norm(zone));
        if (!z) return Promise.reject(new Error(`no zone ${zone}`));
        // One change at a time: each waits for its own serial.
        const step = chain.then(async () => {
          z.spec = { ...z.spec, records };
          z.serial++;
          await writeZone(z);
          await control('nsd-control', nsdConf, 'reload', `${z.name}.`);
          // nsd reloads in the background: wait until it serves the new serial.
          const deadline = performance.now() + STARTUP_TIMEOUT_MS;
          while (serialOf(await probe(authPort, z.name, 'SOA')) !== z.serial) {
            if (performance.now() > deadline) throw new Error(`nsd did not load serial ${z.serial} of ${z.name}:\n${tail('nsd')}`);
            await new Promise((r) => setTimeout(r, 20));
          }
          // flush_zone drops the zone's RRsets, messages and validated keys; bogus and negative entries go too.
          await control('unbound-control', unboundConf, 'flush_zone', `${z.name}.`);
          await control('unbound-control', unboundConf, 'flush_bogus');
          await control('unbound-control', unboundConf, 'flush_negative');
        });
        chain = step.catch(() => {});
        return step;
      },
      close: stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
