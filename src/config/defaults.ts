// The embedded defaults: what `npm start` runs with when there is no file,
// and what fills in every key a file leaves out. Each is declared with its
// key in schema.ts, with the reason for its number; these are the
// resolved values (an empty file, resolved).

import type { Ctx } from './declare.ts';
import { CONFIG } from './schema.ts';
import type { InboundConfig, LimitsConfig, QueueConfig, TernConfig } from './types.ts';

export { MIN_COMMAND_LINE_LENGTH, MIN_LINE_LENGTH } from './schema.ts';

/**
 * Problems are not collected: the literal defaults pass their own checks
 * (an empty file checks clean, see load.test.ts), and the one computed
 * default that is checked, the data directory, is the server's to report
 * when it cannot use it, as it always did without a file.
 */
const quiet = (root: Record<string, unknown> = {}): Ctx => ({ dir: process.cwd(), root, report: () => {} });

/** A fresh, mutable copy of the embedded defaults (hostname and cwd are read now). */
export function defaultConfig(): TernConfig {
  return CONFIG.resolve(undefined, [], quiet(), {});
}

/** One top-level section's defaults, for a section that depends on no other key. */
function sectionDefaults<K extends 'limits' | 'queue'>(key: K): TernConfig[K] {
  return CONFIG.props![key]!.resolve(undefined, [key], quiet(), {}) as TernConfig[K];
}

const deepFreeze = <T>(v: T): Readonly<T> => {
  if (typeof v === 'object' && v !== null) for (const x of Object.values(v)) deepFreeze(x);
  return Object.freeze(v);
};

export const DEFAULT_LIMITS: Readonly<LimitsConfig> = deepFreeze(sectionDefaults('limits'));
export const DEFAULT_QUEUE: Readonly<QueueConfig> = deepFreeze(sectionDefaults('queue'));

/** The `inbound:` defaults for a server named `hostname` (the authserv-id). */
export function defaultInbound(hostname: string): InboundConfig {
  return CONFIG.props!.inbound!.resolve(undefined, ['inbound'], quiet({ hostname, domains: [] }), {}) as InboundConfig;
}
