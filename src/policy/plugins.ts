// User plugins: extra stage checks loaded from the files listed under
// `plugins:` in the config (docs/plugins.md is the contract). Each module's
// default export is a Check, or a factory that makes one from the server's
// config, logger and resolver. They run in the order listed, after the
// built-in checks of the same stage and before the final recipient check.
// At the data stage a plugin may also read the message as it arrives
// (`body`, a feed) and decide once it is in (`data`).
//
// A plugin is someone else's code in our process: every hook goes through a
// guard that lets an SmtpError through as the verdict and turns anything
// else (a crash, a wrong return value) into a logged 451 — an unknown fault
// must never become a permanent rejection.

import { pathToFileURL } from 'node:url';
import type { BodyFeed, Check, DataResult, SessionInfo, Transaction } from './policy.ts';
import type { DataMessage } from './data.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { TernConfig } from '../config/types.ts';
import type { Resolver } from '../dns/resolver.ts';
import type { Logger } from '../util/log.ts';

/** What a plugin factory is given. */
export interface PluginContext {
  config: TernConfig;
  /** Logs under the plugin's name. */
  log: Logger;
  resolver: Resolver;
  /** The error class to throw for a verdict (also importable from src/smtp/reply.ts). */
  SmtpError: typeof SmtpError;
}

export type PluginFactory = (ctx: PluginContext) => Check | Promise<Check>;

const STAGES = ['connect', 'helo', 'mail', 'rcpt', 'body', 'data'] as const;

/** Load every plugin, in order; throws an Error naming the file for the first one that is unusable. */
export async function loadPlugins(files: string[], ctx: Omit<PluginContext, 'SmtpError'>): Promise<Check[]> {
  const checks: Check[] = [];
  for (const file of files) {
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (e) {
      throw new Error(`plugin ${file}: cannot load: ${(e as Error).message}`, { cause: e });
    }
    const exported = mod.default;
    let check: unknown = exported;
    if (typeof exported === 'function') {
      const log = prefixed(ctx.log, file);
      check = await (exported as PluginFactory)({ ...ctx, log, SmtpError });
    }
    const problem = checkProblem(check);
    if (problem) throw new Error(`plugin ${file}: ${problem}`);
    checks.push(guard(check as Check, file, ctx.log));
  }
  return checks;
}

function checkProblem(c: unknown): string | undefined {
  if (typeof c !== 'object' || c === null) return 'the default export must be a Check object or a function returning one';
  const o = c as Record<string, unknown>;
  if (typeof o.name !== 'string' || o.name === '') return 'the check needs a non-empty string "name"';
  for (const stage of STAGES) {
    if (o[stage] !== undefined && typeof o[stage] !== 'function') return `"${stage}" must be a function`;
  }
  if (!STAGES.some((s) => typeof o[s] === 'function')) return `the check has none of the hooks ${STAGES.join(', ')}`;
  return undefined;
}

function prefixed(log: Logger, file: string): Logger {
  const f = (fields?: Record<string, unknown>): Record<string, unknown> => ({ plugin: file, ...fields });
  return {
    debug: (m, x) => log.debug(m, f(x)),
    info: (m, x) => log.info(m, f(x)),
    warn: (m, x) => log.warn(m, f(x)),
    error: (m, x) => log.error(m, f(x)),
  };
}

/** A plugin that bundles its own copy of SmtpError still means a verdict: code 4xx/5xx plus text. */
function asVerdict(e: unknown): SmtpError | undefined {
  if (e instanceof SmtpError) return e;
  const o = e as { code?: unknown; enhanced?: unknown; text?: unknown } | null;
  if (o && typeof o.code === 'number' && o.code >= 400 && o.code < 600 && typeof o.text === 'string') {
    const enhanced = typeof o.enhanced === 'string' && /^[45]\.\d{1,3}\.\d{1,3}$/.test(o.enhanced) && o.enhanced[0] === String(o.code)[0]
      ? o.enhanced
      : `${String(o.code)[0]}.0.0`;
    return new SmtpError(o.code, enhanced, o.text.replace(/[\r\n]+/g, ' '));
  }
  return undefined;
}

function guard(check: Check, file: string, log: Logger): Check {
  const failed = (stage: string, error: unknown): SmtpError => {
    log.error('plugin failed', { plugin: check.name, file, stage, error });
    return new SmtpError(451, '4.3.0', 'Local error in processing, try again later', { cause: error });
  };
  const wrap = <A extends unknown[], R extends string>(
    stage: (typeof STAGES)[number],
    hook: ((...args: A) => R | void | Promise<R | void>) | undefined,
    results: readonly R[],
  ) => {
    if (!hook) return undefined;
    return async (...args: A): Promise<R | void> => {
      let result: unknown;
      try {
        result = await hook.apply(check, args);
      } catch (e) {
        throw asVerdict(e) ?? failed(stage, e);
      }
      if (result === undefined || results.includes(result as R)) return result as R | void;
      const expected = [...results.map((r) => `'${r}'`), 'nothing'].join(' or ');
      throw failed(stage, new Error(`returned ${JSON.stringify(result)}; expected ${expected}`));
    };
  };
  const guarded: Check = { name: check.name };
  const g = guarded as { -readonly [K in keyof Check]: Check[K] };
  const accept = ['accept'] as const;
  g.connect = wrap('connect', check.connect, accept);
  g.helo = wrap('helo', check.helo, accept);
  g.mail = wrap('mail', check.mail, accept);
  g.rcpt = wrap('rcpt', check.rcpt, accept);
  if (check.body || check.data) {
    // A body feed that fails stops being fed, and the message is then
    // refused with 451 at the data stage: the plugin never saw all of it.
    const broken = new WeakMap<DataMessage, unknown>();
    if (check.body) g.body = guardBody(check, check.body, broken, (e) => void failed('body', e));
    const data = wrap('data', check.data, ['accept', 'quarantine'] as const);
    g.data = async (s: SessionInfo, msg: DataMessage, t: Transaction): Promise<DataResult> => {
      if (broken.has(msg)) throw new SmtpError(451, '4.3.0', 'Local error in processing, try again later', { cause: broken.get(msg) });
      return data?.(s, msg, t);
    };
  }
  return guarded;
}

/** The plugin's body hook, and the feed it returns, behind a guard: a throw marks the message broken instead of reaching the session. */
function guardBody(
  check: Check,
  hook: NonNullable<Check['body']>,
  broken: WeakMap<DataMessage, unknown>,
  report: (e: unknown) => void,
): NonNullable<Check['body']> {
  return (s, msg, t) => {
    const fail = (e: unknown): void => {
      if (broken.has(msg)) return;
      broken.set(msg, e);
      report(e);
    };
    let feed: unknown;
    try {
      feed = hook.call(check, s, msg, t);
    } catch (e) {
      fail(e);
      return;
    }
    if (feed === undefined) return;
    if (typeof feed !== 'function') {
      fail(new Error(`body returned ${typeof feed}; expected a function or nothing`));
      return;
    }
    return ((chunk: Buffer) => {
      if (broken.has(msg)) return;
      try {
        (feed as BodyFeed)(chunk);
      } catch (e) {
        fail(e);
      }
    }) satisfies BodyFeed;
  };
}
