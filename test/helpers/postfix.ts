// A real Postfix (the distribution's package, e.g. Debian's 3.7) as a private,
// throw-away receiving MTA on a loopback address, for end-to-end tests of
// Tern's outbound delivery. Everything lives in one temp dir: main.cf and
// master.cf, the queue, the data directory, the log and the delivered mail.
// The system's /etc/postfix instance is neither read nor touched and nothing
// binds port 25.
//
//   const peer = await startPostfix({ address: '127.0.0.2', domain: 'remote.test', tls: { cert, key } });
//   ... deliver to bob@remote.test via 127.0.0.2:peer.port ...
//   const [msg] = await peer.waitForMessages('bob');
//   await peer.stop();
//
// How: `master -c DIR -s` is spawned as our own child (master does not fork;
// it makes itself a session leader, so its PID is also the session and process
// group id of all its children); stop() SIGTERMs it (master then SIGTERMs its
// process group) and sweeps up anything left. Its only smtpd listens on a
// master.cf service "ADDRESS:PORT" (inet_interfaces = loopback-only: 127.0.0.2
// is no interface address, but binding it works as lo has 127.0.0.1/8). Mail
// for any local part of `domain` goes to virtual(8), which writes it to one
// Maildir, <dir>/mail/Maildir/, adding "Delivered-To: <recipient>" by which
// messages(localPart) picks its messages. Every other destination is refused
// (no relaying; the default transport is error(8)), so the instance never
// tries to reach the Internet (no DNS either: smtpd_peername_lookup = no).
//
// Fiddly bits: master logs its fatal start-up errors only to syslog (no
// /dev/log here), so we watch the port rather than wait for a log line;
// maillog_file must be under maillog_file_prefixes; the temp dir must be
// traversable by the postfix user; config files less than a second old make
// every daemon doze 300 ms at a time ("let it cool down"), so they are
// back-dated; and master binds with SO_REUSEPORT, so a port taken by another
// root process does not fail the bind: we check /proc/net/tcp that the
// listening socket is master's own and the only one.
//
// Needs root (master must start as root) and the postfix user/postdrop group.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';

const SBIN = '/usr/lib/postfix/sbin';
const MASTER = path.join(SBIN, 'master');
/** Daemons this instance runs. */
const DAEMONS = ['master', 'smtpd', 'cleanup', 'qmgr', 'pickup', 'trivial-rewrite', 'virtual', 'bounce', 'error', 'postlogd', 'proxymap', 'anvil', 'tlsmgr'];
/** The readiness probe connects from here, so its session can be left out of log(). */
const PROBE_SOURCE = '127.255.255.254';
const START_TIMEOUT_MS = 15_000;
/**
 * master's own exit timer (-e): a safety net so that an instance whose test
 * process died without stop() (killed on timeout, crashed) goes away on its own.
 */
const MAX_LIFETIME_S = 3600;

export interface PostfixPeer {
  address: string;
  port: number;
  /** The domain it accepts mail for. */
  domain: string;
  /** The master process's PID (also the session/process group id of all its processes). */
  pid: number;
  /** The instance's temp dir (etc/, queue/, data/, mail/, maillog). */
  dir: string;
  /**
   * Delivered messages (full Maildir file contents: LF line ends, with the
   * Return-Path and Delivered-To that virtual(8) prepends) for a local part
   * (case-insensitive), oldest first; without a local part, all of them.
   * Every local part of `domain` is accepted. Delivery happens after the 250
   * to DATA, so poll or use waitForMessages.
   */
  messages(localPart?: string): string[];
  /** Wait until `localPart` has at least `count` messages; rejects with the log after `timeoutMs`. */
  waitForMessages(localPart: string, count?: number, timeoutMs?: number): Promise<string[]>;
  /**
   * Postfix's log so far (its maillog file). The readiness probe's session
   * (from 127.255.255.254) is left out, so every "connect from" line is a
   * connection made by the code under test.
   */
  log(): string;
  /** Stop master and every process of this instance, and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface PostfixOptions {
  /** IPv4 loopback address to listen on, e.g. '127.0.0.2'. */
  address: string;
  /** Default: a free port (chosen again if it turns out to be taken). */
  port?: number;
  domain: string;
  /** PEM texts (or paths to PEM files): STARTTLS is offered (smtpd_tls_security_level = may). */
  tls?: { cert: string; key: string };
  /** Extra or overriding main.cf settings, e.g. { message_size_limit: '100000' }. */
  mainCf?: Record<string, string>;
  /** master exits by itself after this many seconds (safety net if stop() is never called); default 3600. */
  lifetimeSeconds?: number;
}

interface Ids { uid: number; gid: number; postdrop: number }

function lookupIds(): Ids | undefined {
  try {
    const pw = fs.readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
    const gr = fs.readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':'));
    const user = pw.find((f) => f[0] === 'postfix');
    const postdrop = gr.find((f) => f[0] === 'postdrop');
    if (!user || !postdrop) return undefined;
    return { uid: Number(user[2]), gid: Number(user[3]), postdrop: Number(postdrop[2]) };
  } catch {
    return undefined;
  }
}

/** Postfix binaries present, the postfix user and postdrop group exist, and we are root. */
export function postfixAvailable(): boolean {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  for (const d of DAEMONS) {
    try {
      fs.accessSync(path.join(SBIN, d), fs.constants.X_OK);
    } catch {
      return false;
    }
  }
  return lookupIds() !== undefined;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Is address:port free to listen on (checked with a plain, exclusive bind)? */
function portFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host: address, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * Ports in use by test peers of any process on this machine: a file
 * <tmp>/tern-postfix-ports/ADDRESS:PORT holding the owner's PID. master binds
 * with SO_REUSEPORT, so two instances given the same port would both start
 * and share the connections; claiming first keeps them apart.
 */
const CLAIMS = path.join(os.tmpdir(), 'tern-postfix-ports');
const ourClaims = new Set<string>();

function claimPort(address: string, port: number): boolean {
  fs.mkdirSync(CLAIMS, { recursive: true, mode: 0o755 });
  const file = path.join(CLAIMS, `${address}:${port}`);
  for (let i = 0; i < 2; i++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
      ourClaims.add(file);
      if (ourClaims.size === 1) process.once('exit', releaseAllPorts);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // Taken: by a live process (maybe this one), or left behind by a dead one.
    const owner = Number(fs.readFileSync(file, 'utf8').trim());
    let alive = owner > 0;
    try {
      if (alive) process.kill(owner, 0);
    } catch (err) {
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (alive) return false;
    fs.rmSync(file, { force: true });
  }
  return false;
}

function releasePort(address: string, port: number): void {
  const file = path.join(CLAIMS, `${address}:${port}`);
  if (!ourClaims.delete(file)) return;
  fs.rmSync(file, { force: true });
  if (ourClaims.size === 0) process.removeListener('exit', releaseAllPorts);
}

function releaseAllPorts(): void {
  for (const file of ourClaims) fs.rmSync(file, { force: true });
  ourClaims.clear();
}

/**
 * A free port, claimed, below the kernel's ephemeral range (default
 * 32768-60999), so that it cannot meanwhile be handed to someone's bind(0) or
 * outgoing connection.
 */
async function freePort(address: string): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (!claimPort(address, port)) continue;
    if (await portFree(address, port)) return port;
    releasePort(address, port);
  }
}

function pem(value: string): string {
  return value.includes('-----BEGIN') ? value : fs.readFileSync(value, 'utf8');
}

/** Live (non-zombie) processes of an instance: in master's session, or carrying its MAIL_CONFIG. */
export function postfixProcesses(peer: { pid: number; dir: string }): number[] {
  const marker = Buffer.from('MAIL_CONFIG=' + path.join(peer.dir, 'etc') + '\0');
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      // pid (comm) state ppid pgrp session ...; comm may contain spaces and parens.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' || fields[0] === 'X') continue;
      if (Number(fields[2]) === peer.pid || Number(fields[3]) === peer.pid) {
        found.push(pid);
        continue;
      }
      if (fs.readFileSync(`/proc/${pid}/environ`).includes(marker)) found.push(pid);
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return found;
}

function mainCf(root: string, opts: PostfixOptions, ids: Ids, tlsFiles?: { cert: string; key: string }): string {
  const settings: Record<string, string> = {
    compatibility_level: '3.6',
    config_directory: path.join(root, 'etc'),
    queue_directory: path.join(root, 'queue'),
    data_directory: path.join(root, 'data'),
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    // Logging: postlogd writes this file; the prefix list must allow it.
    maillog_file: path.join(root, 'maillog'),
    maillog_file_prefixes: root,
    myhostname: 'mx.' + opts.domain,
    mydomain: opts.domain,
    myorigin: '$myhostname',
    mydestination: '',
    // 127.0.0.2 is no interface address; the smtpd service binds ADDRESS:PORT itself.
    inet_interfaces: 'loopback-only',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    // Receive only: never relay, never deliver anywhere but the Maildirs.
    smtpd_relay_restrictions: 'reject_unauth_destination',
    default_transport: 'error:5.7.1 test peer delivers nowhere else',
    relay_transport: 'error:5.7.1 test peer delivers nowhere else',
    local_transport: 'error:5.1.1 no local delivery in test peer',
    smtp_dns_support_level: 'disabled',
    smtpd_peername_lookup: 'no',
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: '',
    biff: 'no',
    append_dot_mydomain: 'no',
    smtputf8_enable: 'yes',
    smtpd_error_sleep_time: '0',
    in_flow_delay: '0',
    // Every local part of the domain is accepted and delivered to one Maildir,
    // <mail>/Maildir/; virtual(8) adds "Delivered-To: <recipient>" to each copy.
    // (A regexp map giving each local part its own Maildir is not possible:
    // virtual(8) refuses $1 substitution in virtual_mailbox_maps results.)
    virtual_mailbox_domains: opts.domain,
    virtual_mailbox_base: path.join(root, 'mail'),
    virtual_mailbox_maps: 'static:Maildir/',
    virtual_uid_maps: 'static:' + ids.uid,
    virtual_gid_maps: 'static:' + ids.gid,
    virtual_minimum_uid: String(ids.uid),
    virtual_mailbox_limit: '0',
    smtpd_tls_loglevel: '1',
    smtpd_tls_received_header: 'yes',
  };
  if (tlsFiles) {
    settings.smtpd_tls_cert_file = tlsFiles.cert;
    settings.smtpd_tls_key_file = tlsFiles.key;
    settings.smtpd_tls_security_level = 'may';
  } else {
    settings.smtpd_tls_security_level = 'none';
  }
  Object.assign(settings, opts.mainCf);
  return Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n';
}

function masterCf(address: string, port: number): string {
  // No chroot anywhere (the queue dir has no etc/ copies); "-" = defaults.
  return [
    `${address}:${port} inet n - n - - smtpd`,
    'pickup    unix  n - n 60    1 pickup',
    'cleanup   unix  n - n -     0 cleanup',
    'qmgr      unix  n - n 300   1 qmgr',
    'tlsmgr    unix  - - n 1000? 1 tlsmgr',
    'rewrite   unix  - - n -     - trivial-rewrite',
    'bounce    unix  - - n -     0 bounce',
    'defer     unix  - - n -     0 bounce',
    'trace     unix  - - n -     0 bounce',
    'verify    unix  - - n -     1 verify',
    'flush     unix  n - n 1000? 0 flush',
    'proxymap  unix  - - n -     - proxymap',
    'proxywrite unix - - n -     1 proxymap',
    'showq     unix  n - n -     - showq',
    'error     unix  - - n -     - error',
    'retry     unix  - - n -     - error',
    'discard   unix  - - n -     - discard',
    // Only used when mainCf routes mail onward (the relay benchmark); by default nothing goes to it.
    'smtp      unix  - - n -     - smtp',
    'virtual   unix  - n n -     - virtual',
    'anvil     unix  - - n -     1 anvil',
    'scache    unix  - - n -     1 scache',
    'postlog   unix-dgram n - n - 1 postlogd',
    '',
  ].join('\n');
}

/** The queue layout of $meta_directory/postfix-files, made by hand (no post-install). */
function makeTree(root: string, ids: Ids): void {
  fs.chmodSync(root, 0o755); // the postfix user must traverse it
  for (const d of ['etc', 'queue', 'data', 'mail']) fs.mkdirSync(path.join(root, d));
  const q = path.join(root, 'queue');
  for (const d of ['active', 'bounce', 'corrupt', 'defer', 'deferred', 'flush', 'hold', 'incoming', 'private', 'saved', 'trace']) {
    fs.mkdirSync(path.join(q, d), { mode: 0o700 });
    fs.chownSync(path.join(q, d), ids.uid, 0);
  }
  fs.mkdirSync(path.join(q, 'maildrop'));
  fs.chownSync(path.join(q, 'maildrop'), ids.uid, ids.postdrop);
  fs.chmodSync(path.join(q, 'maildrop'), 0o730);
  fs.mkdirSync(path.join(q, 'public'));
  fs.chownSync(path.join(q, 'public'), ids.uid, ids.postdrop);
  fs.chmodSync(path.join(q, 'public'), 0o710);
  fs.mkdirSync(path.join(q, 'pid'), { mode: 0o755 });
  fs.chownSync(path.join(root, 'data'), ids.uid, 0);
  fs.chmodSync(path.join(root, 'data'), 0o700);
  fs.chownSync(path.join(root, 'mail'), ids.uid, ids.gid);
  fs.chmodSync(path.join(root, 'mail'), 0o755);
}

function readLog(root: string): string {
  try {
    return fs.readFileSync(path.join(root, 'maillog'), 'utf8');
  } catch {
    return '';
  }
}

/**
 * Who listens on address:port (or the wildcard address), from /proc/net/tcp:
 * 'none'; 'ours' (exactly one socket, held by process `pid`); 'other'.
 * Needed because master binds with SO_REUSEPORT: a second root process can
 * listen on the same port without an error, and connections then go to either.
 */
function listenerOf(pid: number, address: string, port: number): 'none' | 'ours' | 'other' {
  const hexIp = (ip: string) =>
    ip
      .split('.')
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .reverse()
      .join('')
      .toUpperCase();
  const wanted = new Set([`${hexIp(address)}:${port.toString(16).toUpperCase().padStart(4, '0')}`, `00000000:${port.toString(16).toUpperCase().padStart(4, '0')}`]);
  const inodes: string[] = [];
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && f[3] === '0A' && wanted.has(f[1]!)) inodes.push(f[9]!);
  }
  if (inodes.length === 0) return 'none';
  if (inodes.length > 1) return 'other';
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inodes[0]}]`) return 'ours';
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // master gone
  }
  return 'other';
}

/** Connect (from PROBE_SOURCE), wait for a 220 greeting, QUIT. Resolves false on refusal/other trouble. */
function probe(address: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: address, port, localAddress: PROBE_SOURCE });
    let buf = '';
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ok) {
        sock.end('QUIT\r\n');
        sock.on('error', () => {});
        sock.setTimeout(2000, () => sock.destroy());
      } else {
        sock.destroy();
      }
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      if (/^220 [^\n]*\n/m.test(buf)) finish(true);
      else if (/^[45]\d\d [^\n]*\n/m.test(buf)) finish(false);
    });
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
  });
}

/** The recipient from the "Delivered-To: <address>" header virtual(8) prepends (the first one). */
function deliveredTo(message: string): string | undefined {
  const end = message.search(/\r?\n\r?\n/);
  return /^Delivered-To: *([^\r\n]*)/im.exec(end < 0 ? message : message.slice(0, end))?.[1];
}

/** All messages in the Maildir (new/ and cur/), oldest first. */
function readMaildir(dir: string): string[] {
  const files: { file: string; mtime: number; name: string }[] = [];
  for (const sub of ['new', 'cur']) {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(dir, sub));
    } catch {
      continue;
    }
    for (const name of names) {
      const file = path.join(dir, sub, name);
      try {
        files.push({ file, mtime: fs.statSync(file).mtimeMs, name });
      } catch {
        // moved meanwhile
      }
    }
  }
  files.sort((a, b) => a.mtime - b.mtime || a.name.localeCompare(b.name));
  const out: string[] = [];
  for (const f of files) {
    try {
      out.push(fs.readFileSync(f.file, 'utf8'));
    } catch {
      // moved from new/ to cur/ meanwhile (nothing here does that)
    }
  }
  return out;
}

async function killInstance(child: ChildProcess, root: string, exited: Promise<void>): Promise<void> {
  const pid = child.pid!;
  if (child.exitCode === null && child.signalCode === null) {
    // master's SIGTERM handler sends SIGTERM to its whole process group, then exits.
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 5000);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
    }
  }
  // Children exit on SIGTERM (or when they see master's status pipe close); sweep stragglers.
  const deadline = Date.now() + 5000;
  for (;;) {
    const left = postfixProcesses({ pid, dir: root });
    if (left.length === 0) break;
    for (const p of left) {
      try {
        process.kill(p, Date.now() > deadline - 3000 ? 'SIGKILL' : 'SIGTERM');
      } catch {
        // gone
      }
    }
    if (Date.now() > deadline) throw new Error(`postfix processes still alive after stop: ${left.join(', ')}`);
    await sleep(50);
  }
}

async function startOnce(opts: PostfixOptions, port: number, ids: Ids): Promise<PostfixPeer> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-postfix-'));
  try {
    makeTree(root, ids);
  } catch (err) {
    fs.rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const etc = path.join(root, 'etc');
  let tlsFiles: { cert: string; key: string } | undefined;
  if (opts.tls) {
    tlsFiles = { cert: path.join(etc, 'cert.pem'), key: path.join(etc, 'key.pem') };
    fs.writeFileSync(tlsFiles.cert, pem(opts.tls.cert), { mode: 0o644 });
    fs.writeFileSync(tlsFiles.key, pem(opts.tls.key), { mode: 0o600 }); // read by smtpd while still root
  }
  fs.writeFileSync(path.join(etc, 'main.cf'), mainCf(root, opts, ids, tlsFiles));
  fs.writeFileSync(path.join(etc, 'master.cf'), masterCf(opts.address, port));
  // Postfix re-reads a config file that is "hot" (modified within the last
  // second), dozing 300 ms each time: date them back, saving ~2 s per start.
  const past = new Date(Date.now() - 60_000);
  for (const f of fs.readdirSync(etc)) fs.utimesSync(path.join(etc, f), past, past);

  const out = fs.openSync(path.join(root, 'master.out'), 'a');
  // -s: stay in the foreground without daemonizing (master never forks), -e: safety-net lifetime.
  const child = spawn(MASTER, ['-c', etc, '-s', '-e', String(opts.lifetimeSeconds ?? MAX_LIFETIME_S)], {
    cwd: root,
    stdio: ['ignore', out, out],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', MAIL_CONFIG: etc, LANG: 'C' },
  });
  fs.closeSync(out);
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exitInfo = String(err);
      resolve();
    });
  });
  // If this test process exits without stop(), take the instance down with it.
  const onExit = () => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
    try {
      fs.rmSync(root, { recursive: true, force: true });
    } catch {
      // a dying daemon may still hold it; /tmp gets cleaned eventually
    }
  };
  process.once('exit', onExit);

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      try {
        if (child.pid) await killInstance(child, root, exited);
      } finally {
        process.removeListener('exit', onExit);
        fs.rmSync(root, { recursive: true, force: true });
      }
    })();
    return stopped;
  };

  const probeLine = `[${PROBE_SOURCE}]`;
  const log = () =>
    readLog(root)
      .split(/(?<=\n)/)
      .filter((l) => !l.includes(probeLine))
      .join('');
  const messages = (localPart?: string) => {
    const all = readMaildir(path.join(root, 'mail', 'Maildir'));
    if (localPart === undefined) return all;
    // Delivered-To keeps the RCPT TO spelling; local parts are matched case-insensitively.
    const want = `${localPart}@${opts.domain}`.toLowerCase();
    return all.filter((m) => deliveredTo(m)?.toLowerCase() === want);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  let ready = false;
  let why = '';
  while (exitInfo === undefined) {
    if (Date.now() > deadline) {
      why = `no 220 greeting on ${opts.address}:${port} within ${START_TIMEOUT_MS / 1000} s`;
      break;
    }
    const who = listenerOf(child.pid!, opts.address, port);
    if (who === 'other') {
      why = `${opts.address}:${port}: address already in use by another process`;
      break;
    }
    if (who === 'ours' && (await probe(opts.address, port, Math.max(100, Math.min(3000, deadline - Date.now()))))) {
      ready = true;
      break;
    }
    await sleep(who === 'none' ? 20 : 50);
  }
  if (!ready) {
    if (exitInfo !== undefined) why = `master exited (${exitInfo})`;
    let output = '';
    try {
      output = fs.readFileSync(path.join(root, 'master.out'), 'utf8');
    } catch {
      // none
    }
    const text = readLog(root);
    await stop().catch(() => {});
    const err = new Error(
      `Postfix did not start: ${why}.\n--- maillog ---\n${text || '(empty)'}\n--- master stdout/stderr ---\n${output || '(empty)'}\n` +
        '(master logs fatal errors that happen before it opens maillog_file only to syslog, /dev/log; ' +
        'strace -f -e trace=openat,bind,connect on master shows them.)',
    );
    (err as Error & { log?: string }).log = text;
    // master's own "bind: Address already in use" goes to syslog only: look at the port instead.
    (err as Error & { inUse?: boolean }).inUse = /already in use/.test(why + text) || listenerOf(0, opts.address, port) !== 'none';
    throw err;
  }

  return {
    address: opts.address,
    port,
    domain: opts.domain,
    pid: child.pid!,
    dir: root,
    messages,
    async waitForMessages(localPart: string, count = 1, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const got = messages(localPart);
        if (got.length >= count) return got;
        if (Date.now() > until) {
          throw new Error(`${localPart}@${opts.domain}: ${got.length} of ${count} message(s) after ${timeoutMs} ms\n--- maillog ---\n${log()}`);
        }
        await sleep(50);
      }
    },
    log,
    stop,
  };
}

export async function startPostfix(opts: PostfixOptions): Promise<PostfixPeer> {
  if (net.isIP(opts.address) !== 4 || !opts.address.startsWith('127.')) {
    throw new Error(`startPostfix: address must be an IPv4 loopback address, not ${opts.address}`);
  }
  const ids = lookupIds();
  if (!ids) throw new Error('startPostfix: no postfix user or postdrop group');
  for (let attempt = 1; ; attempt++) {
    let port: number;
    if (opts.port !== undefined) {
      port = opts.port;
      if (!claimPort(opts.address, port)) throw new Error(`startPostfix: ${opts.address}:${port} is in use by another Postfix test peer`);
    } else {
      port = await freePort(opts.address);
    }
    let peer: PostfixPeer;
    try {
      peer = await startOnce(opts, port, ids);
    } catch (err) {
      releasePort(opts.address, port);
      // A chosen free port can be taken by someone else before master binds it: choose again.
      if (opts.port === undefined && attempt < 5 && (err as Error & { inUse?: boolean }).inUse) continue;
      throw err;
    }
    const stop = peer.stop;
    peer.stop = () => stop().finally(() => releasePort(opts.address, port));
    return peer;
  }
}
