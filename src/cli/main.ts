// The `tern` command line. Every subcommand takes --config FILE (or
// TERN_CONFIG) so it finds the same data directory as the server.

import { readFileSync } from 'node:fs';
import { loadConfig, ConfigError } from '../config/load.ts';
import type { TernConfig } from '../config/types.ts';
import type { RunningTern } from '../tern.ts';
import { describeStartupError } from '../util/startup-error.ts';
import { QUEUE_USAGE, runQueue } from './queue.ts';
import { USER_USAGE, runUser } from './user.ts';
import { DKIM_USAGE, runDkim } from './dkim.ts';
import { APIKEY_USAGE, runApiKey } from './apikey.ts';
import { SUPPRESSION_USAGE, runSuppression } from './suppression.ts';
import { DNS_USAGE, runDns } from './dns.ts';

const SERVE_USAGE = `  tern serve [--config FILE]        run the server (embedded defaults without a file)
`;
const CONFIG_USAGE = `  tern config check FILE            validate a config file; exit 1 on any problem
`;
const USAGE = `Usage:
${SERVE_USAGE}${CONFIG_USAGE}${QUEUE_USAGE}${USER_USAGE}${DKIM_USAGE}${APIKEY_USAGE}${SUPPRESSION_USAGE}${DNS_USAGE}Options:
  --config FILE                     the config file (also: TERN_CONFIG)
  --version, -V                     print the version and exit
`;

interface Parsed {
  positional: string[];
  config?: string | undefined;
  /** Where `config` came from, for messages that name the data directory. */
  configFrom: 'flag' | 'env' | 'default';
  flags: Set<string>;
}

export function parseArgs(argv: string[]): Parsed {
  const env = process.env.TERN_CONFIG || undefined;
  const out: Parsed = { positional: [], flags: new Set(), config: env, configFrom: env ? 'env' : 'default' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' || a === '-c') [out.config, out.configFrom] = [argv[++i], 'flag'];
    else if (a.startsWith('--config=')) [out.config, out.configFrom] = [a.slice('--config='.length), 'flag'];
    else if (a.startsWith('-')) out.flags.add(a);
    else out.positional.push(a);
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const [cmd, sub, arg] = args.positional;
  if (args.flags.has('--version') || args.flags.has('-V')) {
    process.stdout.write(`tern ${packageVersion()}\n`);
    return 0;
  }
  // Asked for (issue 18): stdout and success. Not asked for (no command): stderr and usage error.
  if (cmd === 'help' || args.flags.has('--help') || args.flags.has('-h')) {
    process.stdout.write(usageOf(cmd === 'help' ? sub : cmd));
    return 0;
  }
  if (!cmd) {
    process.stderr.write(USAGE);
    return 2;
  }
  switch (cmd) {
    case 'serve':
      reexecWithServerFlags();
      return serve(args.config);
    case 'config':
      if (sub === 'check' && (arg ?? args.config)) return (await import('./config-check.ts')).runConfigCheck((arg ?? args.config)!);
      break;
    case 'queue': {
      const config = loadOrReport(args.config);
      return config ? runQueue(config, args.positional.slice(1), args.flags, process.stdout, process.stderr, configOrigin(args)) : 1;
    }
    case 'apikey': {
      const config = loadOrReport(args.config);
      return config ? runApiKey(config, argv.slice(argv.indexOf(cmd) + 1)) : 1;
    }
    case 'suppression': {
      const config = loadOrReport(args.config);
      return config ? runSuppression(config, argv.slice(argv.indexOf(cmd) + 1)) : 1;
    }
    case 'dns': {
      const config = loadOrReport(args.config);
      return config ? runDns(config, argv.slice(argv.indexOf(cmd) + 1)) : 1;
    }
    case 'user':
    case 'dkim': {
      // These parse their own options (some take values); --config is skipped by them.
      const config = loadOrReport(args.config);
      if (!config) return 1;
      const rest = argv.slice(argv.indexOf(cmd) + 1);
      return cmd === 'user' ? runUser(config, rest) : runDkim(config, rest);
    }
  }
  process.stderr.write(USAGE);
  return 2;
}

/**
 * The version in package.json, read when asked: the file sits two levels up
 * from this module both in a checkout (src/cli/) and in the installed
 * package (dist/cli/), and a JSON import would put it outside the build's rootDir.
 */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** `tern queue --help`, `tern help user`: that command's lines; the whole usage for anything else. */
function usageOf(command: string | undefined): string {
  const part = new Map([['serve', SERVE_USAGE], ['config', CONFIG_USAGE], ['queue', QUEUE_USAGE], ['user', USER_USAGE], ['dkim', DKIM_USAGE], ['apikey', APIKEY_USAGE], ['suppression', SUPPRESSION_USAGE], ['dns', DNS_USAGE]]).get(command ?? '');
  return part ? `Usage:\n${part}Options:\n  --config FILE                     the config file (also: TERN_CONFIG)\n` : USAGE;
}

/** How the config (and so the data directory) was chosen, in words, for `tern queue`. */
function configOrigin(args: Parsed): string {
  if (args.configFrom === 'flag') return `the dataDir of ${args.config}, given by --config`;
  if (args.configFrom === 'env') return `the dataDir of ${args.config}, from TERN_CONFIG`;
  return 'the default ./data: no --config FILE or TERN_CONFIG given';
}

function loadOrReport(file: string | undefined): TernConfig | null {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + '\n');
      return null;
    }
    throw e;
  }
}

/**
 * V8 flags for the server, set by replacing this process with itself
 * (process.execve: same PID, so service managers see no difference):
 * a young generation of 4 MB per semi-space instead of up to 16. Under a
 * flood of connections V8 otherwise grows it to 48 MB of RSS that it keeps;
 * measured with 5,000 idle connections (bench/idle.ts) that was most of
 * the memory "per connection". CPU per message did not change measurably
 * (bench/accept.ts). A flag given by the user (command line or
 * NODE_OPTIONS) wins; TERN_NO_REEXEC=1 turns this off.
 */
export const SERVER_V8_FLAGS = ['--max-semi-space-size=4'];

function reexecWithServerFlags(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  const missing = SERVER_V8_FLAGS.filter((f) => !given.some((g) => g.startsWith(f.split('=')[0]!)));
  if (missing.length === 0 || process.env.TERN_NO_REEXEC || typeof process.execve !== 'function') return;
  process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, TERN_NO_REEXEC: '1' });
}

async function serve(file: string | undefined): Promise<number> {
  // The same validation as `tern config check` (certificate and key, alias loops, dataDir): one function, loadConfig.
  const config = loadOrReport(file);
  if (!config) return 1;
  let tern: RunningTern;
  try {
    // Loaded here, not at the top: the server's module graph takes a second or
    // more to load, which `tern queue …` does not need, and `serve` re-executes
    // itself with its V8 flags (above) before it gets here.
    const { startTern } = await import('../tern.ts');
    tern = await startTern(config);
  } catch (e) {
    process.stderr.write(`tern: ${describeStartupError(e)}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string): void => {
      process.stderr.write(`tern: ${sig}, stopping\n`);
      void tern.stop().then(resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
    // systemctl reload (ExecReload=/bin/kill -HUP $MAINPID): re-read the config and certificates; errors are logged, never fatal.
    process.on('SIGHUP', () => void tern.reload());
  });
  return 0;
}

/**
 * Runs a command and ends the process only once everything written to
 * stdout and stderr has left it. process.exit() right after a write drops
 * whatever the pipe did not take at once (64 KiB on Linux: a `queue list
 * --json | jq` cut mid-JSON), so the exit waits for both streams to flush.
 * It still exits explicitly afterwards: a command must not hang on a
 * forgotten handle once its answer is out.
 */
export async function run(argv: string[]): Promise<never> {
  // A reader that stops early (`| head`) closes the pipe: nothing more to say, and no stack for it.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      if (stream === process.stdout) process.stderr.write(`tern: cannot write the output: ${e.message}\n`);
      process.exit(1);
    });
  }
  let code: number;
  try {
    code = await main(argv);
  } catch (e) {
    process.stderr.write(`tern: ${e instanceof Error ? e.message : String(e)}\n`);
    code = 1;
  }
  process.exitCode = code;
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit(code);
}

/** Resolves once every earlier write to `stream` has been handed to the OS (writes complete in order). */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.destroyed || !stream.writable) return Promise.resolve();
  return new Promise((resolve) => stream.write('', () => resolve()));
}

if (import.meta.main) await run(process.argv.slice(2));
