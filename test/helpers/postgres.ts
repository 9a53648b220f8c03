// A private PostgreSQL cluster for tests (issue 17): Debian's server
// binaries (`postgresql`, installed by scripts/install-test-deps.sh), a
// cluster made with initdb in a temp directory, listening on a loopback port
// only, with trust authentication for the one local user. PostgreSQL
// refuses to run as root, so under root (CI) initdb and pg_ctl run as the
// `postgres` system user the package creates, and the directory is theirs.
//
// Durability settings are left at their defaults except fsync, turned off to
// keep tests quick: these tests check Tern's behaviour with a shared store,
// not PostgreSQL's own crash safety.
//
//   const pg = await startPostgres();
//   const url = await pg.createDatabase('t1');   // postgres://tern@127.0.0.1:PORT/t1
//   ... await pg.stop();

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './server.ts';
import { skipsForbidden } from './tools.ts';

const run = promisify(execFile);

export interface PgCluster {
  port: number;
  /** postgres://tern@127.0.0.1:PORT/postgres */
  url: string;
  /** A fresh database; its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (fast shutdown); start() brings it back on the same port with the same data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes everything. */
  destroy(): Promise<void>;
}

/** The newest installed server's bin directory, or null. */
export function postgresBin(): string | null {
  const base = '/usr/lib/postgresql';
  if (!fs.existsSync(base)) return null;
  const versions = fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(base, versions[0], 'bin') : null;
}

/** The skip reason, or false when a PostgreSQL server can be started (under CI a missing one is an error). */
export function requirePostgres(): string | false {
  if (postgresBin()) return false;
  const reason = 'PostgreSQL server missing (Debian package postgresql; sudo scripts/install-test-deps.sh installs every test dependency)';
  if (skipsForbidden()) throw new Error(`${reason}; CI is set, where a skipped test is a failure`);
  return reason;
}

export async function startPostgres(): Promise<PgCluster> {
  const bin = postgresBin();
  if (!bin) throw new Error('no PostgreSQL server installed');
  const root = process.getuid?.() === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-pg-'));
  const data = path.join(dir, 'data');
  const port = await freePort('127.0.0.1');
  // Under root: everything as the postgres user, in a directory it owns.
  const as = async (cmd: string, args: string[]): Promise<void> => {
    if (root) await run('runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args], { cwd: '/' });
    else await run(path.join(bin, cmd), args);
  };
  if (root) {
    fs.chmodSync(dir, 0o755);
    await run('chown', ['postgres:postgres', dir]);
  }
  await as('initdb', ['-D', data, '-U', 'tern', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const opts = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c max_connections=100`;
  const start = (): Promise<void> => as('pg_ctl', ['-D', data, '-o', opts, '-l', path.join(dir, 'log'), '-w', '-t', '30', 'start']);
  const stop = (): Promise<void> => as('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => {});
  await start();
  const url = `postgres://tern@127.0.0.1:${port}/postgres`;
  return {
    port,
    url,
    createDatabase: async (name) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      await run(path.join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'tern', name]);
      return `postgres://tern@127.0.0.1:${port}/${name}`;
    },
    stop,
    start,
    destroy: async () => {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
