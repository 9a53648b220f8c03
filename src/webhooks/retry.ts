// When a failed webhook POST is tried again. The receiver is usually back
// within seconds (a deploy, a restart), sometimes hours later (an outage):
// the first retries come quickly, the later ones every few hours, until
// `webhooks.retryFor` (3 days, as Standard Webhooks' reference service,
// Svix, retries) after the event. Every delay gets jitter, so events that
// failed together (an endpoint down for a while, a restart of Tern) do not
// all come back in the same second.

/** Delay before retry N (N = 1 is the first retry), in ms; the last entry repeats. */
export const RETRY_SCHEDULE: readonly number[] = [
  5_000, // the contract: the first retry within a minute
  30_000,
  2 * 60_000,
  10 * 60_000,
  30 * 60_000,
  60 * 60_000,
  2 * 3600_000,
  4 * 3600_000,
  6 * 3600_000,
];

/** Up to this share of a delay is added at random. */
export const JITTER = 0.1;

/**
 * The delay after failed attempt number `attempts` (1 after the first POST
 * failed). `random` is Math.random's range [0, 1); tests pass a constant.
 */
export function retryDelay(attempts: number, schedule: readonly number[] = RETRY_SCHEDULE, random: () => number = Math.random): number {
  const base = schedule[Math.min(Math.max(attempts, 1), schedule.length) - 1] ?? RETRY_SCHEDULE[0]!;
  return Math.round(base * (1 + JITTER * random()));
}

/**
 * The time of the next attempt after failed attempt number `attempts` at
 * `now`, or null when it would fall after `deadline` (the event's time plus
 * `webhooks.retryFor`): the event is given up.
 */
export function nextAttempt(attempts: number, now: number, deadline: number, schedule?: readonly number[], random?: () => number): number | null {
  const at = now + retryDelay(attempts, schedule, random);
  return at > deadline ? null : at;
}
