// The servers under test, started the same way for every benchmark that
// accepts mail (bench/accept.ts, bench/memory.ts): each pinned to CPU 0,
// listening on 127.0.0.1, with one interface: the port, the recipient to
// use, its processes (for CPU and memory), how many messages it has fully
// handled so far, and stop().
//
//   tern          `tern serve` as a user runs it, like for like with Postfix:
//                 durable spool (fsync), Received header, info logs to a
//                 file, `delivery: discard` for the recipient's domain (each
//                 message durably queued, then dropped by the scheduler, as
//                 Postfix's discard(8)), inbound SPF/DKIM/DMARC/iprev checks
//                 off (Postfix and Haraka run none either). Handled = its
//                 log's `"relay":"discard"` delivery lines.
//   tern-checks   the same with the inbound checks on (Tern's default).
//   tern-maildir  the same (checks off) delivering to a Maildir (no
//                 `delivery` key). Handled = files in the Maildir's new/.
//   tern-default  Tern's defaults for a receiving domain: the inbound checks
//                 on and Maildir delivery (issue 16's headline). Handled =
//                 files in the Maildir's new/.
//   postfix       a private instance (test/helpers/postfix.ts): smtpd into its
//                 real queue (fsynced), qmgr hands each message to discard(8).
//                 Handled = "status=sent" lines in its maillog.
//   postfix-maildir  the same instance layout delivering into a Maildir
//                 through virtual(8) (the helper's own virtual_mailbox_*
//                 settings; no SPF/DKIM/DMARC: Postfix has none built in).
//                 Handled = files in the Maildir's new/, as for Tern.
//   haraka        Haraka from npm (bench/haraka.ts), one process, queueing
//                 each message to an fsynced file. Handled = files queued.
//
// All three have the same message size limit (128 MiB, room for the 100 MB
// message of bench/memory.ts).
//   sink          Postfix's smtp-sink: SMTP without disk, the upper bound.
//
// Tern's lookups go to a loopback DNS server with empty zones
// (test/helpers/dns-server.ts): quick NXDOMAIN answers from this machine.

import fs from 'node:fs';
import path from 'node:path';
import { postfixProcesses, startPostfix } from '../test/helpers/postfix.ts';
import { freePort } from '../test/helpers/server.ts';
import { startHaraka } from './haraka.ts';
import {
  countFiles, emptyDir, logCounter, pinPids, SERVER_CPU, sleep, startSink, startTern, tempDir, waitUntil,
} from './lib.ts';

export type PeerName = 'tern' | 'tern-checks' | 'tern-maildir' | 'tern-default' | 'postfix' | 'postfix-maildir' | 'haraka' | 'sink';
export type TernVariant = 'tern' | 'tern-checks' | 'tern-maildir' | 'tern-default';

/** Variants that deliver into a Maildir (and count files in its new/ as handled). */
const MAILDIR_VARIANTS: readonly TernVariant[] = ['tern-maildir', 'tern-default'];
/** Variants with the inbound checks on (no `inbound` key: Tern's default). */
const CHECKING_VARIANTS: readonly TernVariant[] = ['tern-checks', 'tern-default'];

export interface Peer {
  name: PeerName;
  port: number;
  /** RCPT TO address the peer accepts. */
  to: string;
  /** The server's processes (re-read each call for servers that fork). */
  pids: () => number[];
  /** Messages fully handled (discarded / queued / delivered / sunk) since start. */
  done: () => number;
  /** Drop what the peer kept on disk (queued files, Maildir) between runs; not measured. */
  clean: () => void;
  stop: () => Promise<void>;
  /** What was configured, for the report: Tern's config file, Postfix's main.cf settings over test/helpers/postfix.ts's, Haraka's settings. */
  config: Record<string, unknown>;
}

export const MiB = 1024 * 1024;

export interface TernLimits { connections?: number; connectionsPerIp?: number; messageSize?: number }

/** Limits of every Tern in the benchmarks (defaults elsewhere): room for 100 sessions and for the 100 MB message. */
export const TERN_LIMITS = { connectionsPerIp: 1000, connections: 2000, messageSize: 128 * MiB };

/** The Tern configuration of a variant (written to tern.yaml as is; shown in docs/benchmarks.md). */
export function ternConfig(variant: TernVariant, o: { port: number; dataDir: string; dns: string; limits?: TernLimits }): Record<string, unknown> {
  return {
    hostname: 'bench.tern.test',
    dataDir: o.dataDir,
    listeners: [{ role: 'smtp', address: '127.0.0.1', port: o.port }],
    domains: [MAILDIR_VARIANTS.includes(variant) ? { name: 'tern.test', mailboxes: ['user'] } : { name: 'tern.test', delivery: 'discard' }],
    ...(CHECKING_VARIANTS.includes(variant) ? {} : { inbound: { enabled: false } }),
    limits: { ...TERN_LIMITS, ...o.limits },
    dns: { servers: [o.dns] },
  };
}

export async function startTernPeer(variant: TernVariant, dns: string, limits?: TernLimits): Promise<Peer> {
  const dir = tempDir(`tern-bench-${variant}-`);
  const port = await freePort('127.0.0.1');
  const dataDir = path.join(dir, 'data');
  const config = ternConfig(variant, { port, dataDir, dns, ...(limits ? { limits } : {}) });
  const tern = await startTern(config, dir, SERVER_CPU);
  const maildir = path.join(dataDir, 'mailboxes', 'tern.test', 'user', 'new');
  const maildir0 = { base: 0 };
  const discarded = logCounter(tern.logFile, '"relay":"discard"');
  return {
    name: variant,
    config,
    port,
    to: 'user@tern.test',
    pids: () => [tern.pid],
    done: MAILDIR_VARIANTS.includes(variant) ? () => maildir0.base + countFiles(maildir) : discarded,
    clean: () => {
      if (!MAILDIR_VARIANTS.includes(variant)) return;
      maildir0.base += countFiles(maildir);
      emptyDir(maildir);
    },
    stop: async () => {
      await tern.stop();
      ternJournal[variant] = journalStats(tern.logFile);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Per Tern variant, from its "tern stopped" log line: journal batches (one fdatasync each) and the records in them. */
export const ternJournal: Partial<Record<string, { batches: number; records: number }>> = {};

function journalStats(logFile: string): { batches: number; records: number } | undefined {
  const text = fs.readFileSync(logFile, 'utf8');
  const line = text.split('\n').reverse().find((l) => l.includes('"tern stopped"'));
  const j = line ? (JSON.parse(line) as { journal?: { batches: number; records: number } }).journal : undefined;
  return j && j.batches > 0 ? j : undefined;
}

/** Postfix as a receiving MTA that discards: `mainCf` adds or overrides main.cf settings. */
export async function startPostfixPeer(mainCf: Record<string, string> = {}): Promise<Peer> {
  // 200 processes per service: never fewer smtpd than the 100 sessions.
  // The message size limit as Tern's (Postfix's default is 10240000 bytes).
  const config = { virtual_transport: 'discard', default_process_limit: '200', message_size_limit: String(TERN_LIMITS.messageSize), ...mainCf };
  const postfix = await startPostfix({ address: '127.0.0.1', domain: 'pf.test', mainCf: config });
  const pids = () => postfixProcesses(postfix);
  // master's children inherit its CPU affinity.
  pinPids(SERVER_CPU, pids());
  const sent = logCounter(path.join(postfix.dir, 'maillog'), ' status=sent ');
  return { name: 'postfix', config, port: postfix.port, to: 'user@pf.test', pids, done: sent, clean: () => {}, stop: () => postfix.stop() };
}

/**
 * Postfix delivering into a Maildir through virtual(8), as the helper sets it
 * up (virtual_mailbox_domains = pf.test, virtual_mailbox_maps =
 * static:Maildir/ under virtual_mailbox_base, static uid/gid of the postfix
 * user: virtual(8) refuses root, and any unprivileged owner costs the same).
 * virtual(8) fsyncs each file before linking it into new/.
 */
export async function startPostfixMaildirPeer(): Promise<Peer> {
  const settings = { virtual_transport: 'virtual', default_process_limit: '200', message_size_limit: String(TERN_LIMITS.messageSize) };
  const postfix = await startPostfix({ address: '127.0.0.1', domain: 'pf.test', mainCf: settings });
  const pids = () => postfixProcesses(postfix);
  pinPids(SERVER_CPU, pids());
  const newDir = path.join(postfix.dir, 'mail', 'Maildir', 'new');
  const count = { base: 0 };
  const config = {
    ...settings,
    virtual_mailbox_domains: 'pf.test',
    virtual_mailbox_base: '<instance dir>/mail',
    virtual_mailbox_maps: 'static:Maildir/',
    virtual_uid_maps: 'static:<uid of postfix>',
    virtual_gid_maps: 'static:<gid of postfix>',
  };
  return {
    name: 'postfix-maildir',
    config,
    port: postfix.port,
    to: 'user@pf.test',
    pids,
    done: () => count.base + countFiles(newDir),
    clean: () => {
      count.base += countFiles(newDir);
      emptyDir(newDir);
    },
    stop: () => postfix.stop(),
  };
}

export async function startHarakaPeer(): Promise<Peer> {
  const dir = tempDir('tern-bench-haraka-');
  const port = await freePort('127.0.0.1');
  // The message size limit as Tern's (Haraka's default is 25 MiB).
  const options = { address: '127.0.0.1', port, cpu: SERVER_CPU, dir, domain: 'haraka.test', maxBytes: TERN_LIMITS.messageSize };
  const h = await startHaraka(options);
  const queued = path.join(dir, 'haraka', 'mail', 'new');
  const count = { base: 0 };
  return {
    name: 'haraka',
    config: { version: h.version, ...options, dir: undefined, plugins: ['queue-fsync (bench/peers/haraka/queue-fsync.js)', 'rcpt_to.in_host_list'], nodes: 0, logLevel: 'notice' },
    port,
    to: 'user@haraka.test',
    pids: h.pids,
    done: () => count.base + countFiles(queued),
    clean: () => {
      count.base += countFiles(queued);
      emptyDir(queued);
    },
    stop: async () => {
      await h.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startSinkPeer(): Promise<Peer> {
  const port = await freePort('127.0.0.1');
  const sink = startSink('127.0.0.1', port, SERVER_CPU);
  await waitUntil(() => sink.child.pid !== undefined, 1000);
  await sleep(200);
  return {
    name: 'sink',
    config: { command: `smtp-sink -u nobody -c 127.0.0.1:${port} 1024` },
    port,
    to: 'user@sink.test',
    // taskset exec()s smtp-sink (same pid); smtp-sink is one process.
    pids: () => [sink.child.pid!],
    done: sink.count,
    clean: () => {},
    stop: async () => {
      const gone = new Promise<void>((r) => sink.child.once('exit', () => r()));
      sink.stop();
      await Promise.race([gone, sleep(5000)]);
    },
  };
}
