// Test harness: a real Tern on loopback with a temp data dir, either in this
// process (fast, for protocol tests) or as a child process (for kill -9).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { spawn, type ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern, type TernOptions } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { hashPassword } from '../../src/store/passwords.ts';

/** The test account every test server has (submission needs AUTH). */
export const ALICE = { user: 'alice@tern.test', password: 'alice-secret-pw' };
const ALICE_HASH = await hashPassword(ALICE.password);

export const ROOT = path.resolve(import.meta.dirname, '../..');

export interface TestServer {
  tern: RunningTern;
  dir: string;
  dataDir: string;
  port: (role: 'smtp' | 'submission' | 'submissions' | 'http') => number;
  stop: () => Promise<void>;
}

/**
 * Every temp dir writeConfig made in this process, removed when it exits:
 * many tests keep a data dir across restarts (or kill -9) and never remove
 * it, and each test file runs in a process of its own.
 */
const madeDirs = new Set<string>();
process.once('exit', () => {
  for (const dir of madeDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A config file in a fresh temp dir; `extra` is merged over the defaults below. */
export function writeConfig(extra: Record<string, unknown> = {}): { dir: string; file: string; dataDir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-test-'));
  madeDirs.add(dir);
  const dataDir = path.join(dir, 'data');
  const config = {
    hostname: 'mx.tern.test',
    dataDir,
    listeners: [
      { role: 'smtp', address: '127.0.0.1', port: 0 },
      { role: 'submission', address: '127.0.0.1', port: 0 },
      { role: 'submissions', address: '127.0.0.1', port: 0 },
    ],
    domains: [
      {
        name: 'tern.test',
        mailboxes: ['alice', 'bob'],
        aliases: { postmaster: 'alice', team: ['alice', 'bob'], fwd: ['alice', 'someone@remote.test'] },
      },
      { name: 'catch.test', mailboxes: ['carol'], catchAll: 'carol' },
    ],
    trustedNetworks: [],
    users: [{ address: ALICE.user, passwordHash: ALICE_HASH, sendAs: ['@tern.test'] }],
    // The inbound checks (SPF/DKIM/DMARC) query DNS for every message on the smtp
    // listener; tests of them turn them on together with the test DNS server.
    inbound: { enabled: false },
    ...extra,
  };
  const file = path.join(dir, 'tern.yaml');
  fs.writeFileSync(file, stringify(config));
  return { dir, file, dataDir };
}

export async function startServer(extra: Record<string, unknown> = {}, options: TernOptions = {}): Promise<TestServer> {
  const { dir, file, dataDir } = writeConfig(extra);
  const tern = await startTern(loadConfig(file), { log: silentLogger, ...options });
  return {
    tern,
    dir,
    dataDir,
    port: (role) => tern.ports.find((p) => p.role === role)!.port,
    stop: async () => {
      await tern.stop(500);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Tern as a child process (`tern serve --config`); resolves when it logs its ports. */
export async function spawnServer(file: string): Promise<{ child: ChildProcess; ports: Record<string, number>; log: string[] }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  let buf = '';
  const ports = await new Promise<Record<string, number>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start: ' + log.join(''))), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(line);
        try {
          const rec = JSON.parse(line) as { msg: string; listeners?: { role: string; port: number }[] };
          if (rec.msg === 'tern started') {
            clearTimeout(timer);
            resolve(Object.fromEntries(rec.listeners!.map((l) => [l.role, l.port])));
          }
        } catch {
          /* not JSON */
        }
      }
    });
    child.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${log.join('\n')}`)));
  });
  return { child, ports, log };
}

/**
 * A raw SMTP client for asserting exact reply lines. `send` writes bytes
 * as given; `reply` reads one complete (possibly multi-line) reply.
 */
export class RawClient {
  socket: net.Socket;
  #buf = '';
  #waiters: (() => void)[] = [];
  closed = false;

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.#attach(socket);
  }

  #attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.#buf += d;
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  static connectTls(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ port, host, rejectUnauthorized: false }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Read one full reply; returns its lines joined with "\n". */
  async reply(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.#buf);
      if (m) {
        this.#buf = this.#buf.slice(m[0].length);
        return m[0].replace(/\r\n/g, '\n').trimEnd();
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.#buf)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for reply; have ${JSON.stringify(this.#buf)}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** Send a line (CRLF added) and read its reply. */
  async cmd(line: string): Promise<string> {
    this.send(line + '\r\n');
    return this.reply();
  }

  /** Upgrade after a 220 to STARTTLS. */
  async starttls(): Promise<void> {
    const raw = this.socket;
    raw.removeAllListeners('data');
    this.socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw, rejectUnauthorized: false }, () => resolve(s));
      s.once('error', reject);
    });
    this.#attach(this.socket);
  }

  /** Wait until the server closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('server did not close the connection');
      await new Promise<void>((res) => {
        const t = setTimeout(res, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** Whatever is buffered and not yet read as a reply. */
  get pending(): string {
    return this.#buf;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Files delivered to a mailbox's new/ (Maildir). */
export function mailbox(dataDir: string, domain: string, user: string, folder = 'new'): string[] {
  const dir = path.join(dataDir, 'mailboxes', domain, user, folder);
  try {
    return fs.readdirSync(dir).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/** Poll until `fn` returns truthy or the timeout passes. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A TCP port free on `host` right now (the caller binds it next). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
