// Haraka (https://haraka.github.io, from npm) as a benchmark peer.
//
// Installed on first use with npm into bench/.peers/haraka/ (git-ignored),
// at a pinned version, and reused after that. Each start writes a Haraka
// directory under `dir`: one process (smtp.ini nodes=0, no cluster), listening
// on address:port, accepting RCPT TO for `domain` (rcpt_to.in_host_list) from
// anyone without auth, and queueing with bench/peers/haraka/queue-fsync.js:
// each message streamed to a file, fsynced, renamed into <dir>/haraka/mail/new/
// and that directory fsynced before the 250 (see the plugin). No plugin that
// looks anything up; Haraka's own reverse DNS lookup of each client is
// answered "unknown" by the plugin (as Postfix's smtpd_peername_lookup = no)
// unless `dns` is given: then Haraka does the lookup, /etc/hosts first (where
// 127.0.0.1 usually is) and then that server. Logs
// at `logLevel` (default notice: a few lines per message, as Tern's info log
// and Postfix's maillog) to <dir>/haraka/haraka.log.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { pin, processTree, sleep, waitUntil } from './lib.ts';

export const HARAKA_VERSION = '3.3.4';

const PEERS_DIR = path.join(import.meta.dirname, '.peers', 'haraka');
const PLUGIN_SRC = path.join(import.meta.dirname, 'peers', 'haraka', 'queue-fsync.js');

export interface HarakaPeer { port: number; pids: () => number[]; done: () => number; stop: () => Promise<void>; version: string }

export interface HarakaOptions {
  address: string;
  port: number;
  cpu: number;
  dir: string;
  domain: string;
  /** "host:port" of a DNS server: Haraka then does its reverse lookup of each client there. */
  dns?: string;
  logLevel?: 'data' | 'protocol' | 'debug' | 'info' | 'notice' | 'warn' | 'error';
  /** false: no fsyncs (default true). */
  fsync?: boolean;
  /** Largest message accepted (connection.ini [max] bytes; Haraka's default is 25 MiB). */
  maxBytes?: number;
}

function installedVersion(): string | undefined {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(PEERS_DIR, 'node_modules', 'Haraka', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version;
  } catch {
    return undefined;
  }
}

/**
 * Haraka's bin/haraka, installed with npm if missing or at another version.
 * npm runs under this Node (its directory first on PATH). Optional
 * dependencies (the plugins not used here, some native) and install scripts
 * are skipped.
 */
export function ensureHaraka(): string {
  const bin = path.join(PEERS_DIR, 'node_modules', 'Haraka', 'bin', 'haraka');
  if (installedVersion() === HARAKA_VERSION && fs.existsSync(bin)) return bin;
  fs.mkdirSync(PEERS_DIR, { recursive: true });
  fs.writeFileSync(path.join(PEERS_DIR, 'package.json'), `${JSON.stringify({
    name: 'tern-bench-peer-haraka', private: true, description: 'Haraka for bench/haraka.ts; installed by it, git-ignored',
    dependencies: { Haraka: HARAKA_VERSION },
  }, null, 2)}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` };
  // Set when run from `npm run`; would point npm at the repository instead.
  delete env.npm_config_local_prefix;
  console.log(`haraka: npm install Haraka@${HARAKA_VERSION} into ${path.relative(process.cwd(), PEERS_DIR) || PEERS_DIR} ...`);
  const r = spawnSync('npm', [
    'install', '--prefix', PEERS_DIR, '--omit=optional', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error',
  ], { cwd: PEERS_DIR, env, stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
  if (r.status !== 0 || installedVersion() !== HARAKA_VERSION) {
    throw new Error(`npm install Haraka@${HARAKA_VERSION} failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''})`);
  }
  return bin;
}

/** Resolves true once a connection to address:port gets a 220 greeting. */
function greets(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: address, port });
    let buf = '';
    const end = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => end(false));
    s.on('error', () => end(false));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (/^220[ -]/m.test(buf)) {
        s.end('QUIT\r\n');
        resolve(true);
      } else if (/^\d{3} /m.test(buf)) end(false);
    });
  });
}

export async function startHaraka(o: HarakaOptions): Promise<HarakaPeer> {
  const bin = ensureHaraka();
  const version = installedVersion()!;
  const home = path.join(o.dir, 'haraka');
  const config = path.join(home, 'config');
  const queue = path.join(home, 'mail');
  const mail = path.join(queue, 'new');
  fs.mkdirSync(path.join(home, 'plugins'), { recursive: true });
  fs.mkdirSync(config, { recursive: true });
  fs.copyFileSync(PLUGIN_SRC, path.join(home, 'plugins', 'queue-fsync.js'));
  const listen = o.address.includes(':') ? `[${o.address}]:${o.port}` : `${o.address}:${o.port}`;
  const files: Record<string, string> = {
    'smtp.ini': `listen=${listen}\n; one process, no cluster: the server on one core, as the other peers\nnodes=0\n`,
    me: 'bench.haraka.test\n',
    host_list: `${o.domain}\n`,
    plugins: 'queue-fsync\nrcpt_to.in_host_list\n',
    'log.ini': `[main]\nlevel=${o.logLevel ?? 'notice'}\ntimestamps=false\nformat=default\n`,
    'queue-fsync.ini': `[main]\ndir=${queue}\nfsync=${o.fsync === false ? 'false' : 'true'}\nrdns=${o.dns ? 'true' : 'false'}\n${o.dns ? `dns=${o.dns}\n` : ''}`,
    // Haraka's own outbound queue (unused here; default <home>/queue).
    'queue_dir': `${path.join(home, 'outbound')}\n`,
  };
  // As `haraka -i` does: the core's connection.ini (greeting, limits), which
  // is not read from the core when a config directory is given.
  let connectionIni = fs.readFileSync(path.join(path.dirname(bin), '..', 'config', 'connection.ini'), 'utf8');
  if (o.maxBytes !== undefined) {
    if (!/^bytes=\d+$/m.test(connectionIni)) throw new Error('haraka: no [max] bytes= in its connection.ini');
    connectionIni = connectionIni.replace(/^bytes=\d+$/m, `bytes=${o.maxBytes}`);
  }
  fs.writeFileSync(path.join(config, 'connection.ini'), connectionIni);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(config, name), text);

  const logFile = path.join(home, 'haraka.log');
  const fd = fs.openSync(logFile, 'w');
  const [cmd, argv] = pin(o.cpu, process.execPath, [bin, '-c', home]);
  const child = spawn(cmd, argv, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited: number | null | undefined;
  child.once('exit', (c, sig) => (exited = c ?? (sig ? -1 : null)));
  const pid = child.pid!;

  const end = Date.now() + 60_000;
  let up = false;
  while (!up && exited === undefined && Date.now() < end) {
    up = await greets(o.address, o.port);
    if (!up) await sleep(50);
  }
  if (!up) {
    child.kill('SIGKILL');
    throw new Error(`haraka did not start (exit ${exited}):\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
  }

  return {
    port: o.port,
    version,
    pids: () => (exited === undefined ? processTree(pid) : []),
    done: () => {
      try {
        return fs.readdirSync(mail).length;
      } catch {
        return 0;
      }
    },
    stop: async () => {
      if (exited !== undefined) return;
      const all = processTree(pid);
      const kill = (sig: NodeJS.Signals) => {
        for (const p of all) {
          try {
            process.kill(p, sig);
          } catch {
            /* gone */
          }
        }
      };
      kill('SIGTERM');
      if (!(await waitUntil(() => exited !== undefined, 10_000, 20))) {
        kill('SIGKILL');
        await waitUntil(() => exited !== undefined, 5_000, 20);
      }
    },
  };
}
