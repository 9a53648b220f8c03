// `tern queue …`: look at and steer the queue of a running server, over
// its control socket (never by touching the spool behind its back).

import fs from 'node:fs';
import path from 'node:path';
import { controlRequest } from '../server/control.ts';
import type { QueueSummary, RetryOutcome } from '../queue/scheduler.ts';
import type { DeliveryReply, Envelope, SuppressedDsn } from '../spool/types.ts';
import { replyLine } from '../delivery/reply.ts';
import type { TernConfig } from '../config/types.ts';
import type { DrainSummary } from '../tern.ts';

export const QUEUE_USAGE = `  tern queue list [--json]          queued messages: id, age, sender, recipients, next attempt, last reply
  tern queue show ID [--json]       one message: envelope and per-recipient state
  tern queue retry ID|--all         try now (held messages stay held: release them)
  tern queue hold ID                stop trying until released
  tern queue release ID             try again now
  tern queue delete ID              remove, without a bounce
  tern queue drain --to HOST:PORT   hand every queued message to another node over SMTP (each
                                    removed after its 250); this node keeps forwarding until restarted
`;

export function controlPath(config: TernConfig): string {
  return path.join(config.dataDir, 'control.sock');
}

type Out = { write(s: string): unknown };

/**
 * `origin` says how the data directory was chosen (--config, TERN_CONFIG or
 * the default ./data): every command names the server it talks to on
 * stderr, so "The queue is empty." never comes silently from the wrong one.
 */
export async function runQueue(config: TernConfig, args: string[], flags: Set<string>, out: Out = process.stdout, err: Out = process.stderr, origin = 'its config'): Promise<number> {
  const [sub, id] = args;
  const json = flags.has('--json');
  const sock = controlPath(config);
  const dataDir = path.resolve(config.dataDir);
  if (['list', 'show', 'retry', 'hold', 'release', 'delete', 'drain'].includes(sub ?? '')) err.write(`tern: server at ${dataDir} (control.sock; ${origin})\n`);
  const need = (what: string): boolean => {
    if (id) return true;
    err.write(`tern queue ${what}: needs a queue id\n`);
    return false;
  };
  try {
    switch (sub) {
      case 'list': {
        const list = (await controlRequest(sock, { cmd: 'queue.list' })) as QueueSummary[];
        out.write(json ? JSON.stringify(list, null, 2) + '\n' : formatList(list));
        return 0;
      }
      case 'show': {
        if (!need('show')) return 2;
        const m = await controlRequest(sock, { cmd: 'queue.show', id });
        if (!m) return notFound(err, id!);
        out.write(json ? JSON.stringify(m, null, 2) + '\n' : formatShow(m as QueueSummary));
        return 0;
      }
      case 'retry': {
        const all = flags.has('--all');
        if (!all && !need('retry')) return 2;
        const r = (await controlRequest(sock, { cmd: 'queue.retry', id: all ? undefined : id })) as RetryOutcome | null;
        if (r === null) return notFound(err, id!);
        if (!all && r.held > 0) {
          // Issue 18: a retry does not lift a hold, so say so rather than claim it was scheduled.
          err.write(`tern queue retry: ${id} is held, so it was not retried; \`tern queue release ${id}\` lifts the hold and tries it now\n`);
          return 1;
        }
        const held = r.held > 0 ? ` (${r.held} held message${r.held === 1 ? '' : 's'} left alone: \`tern queue release ID\` tries one)` : '';
        out.write(json ? JSON.stringify(r) + '\n' : `${r.scheduled} message${r.scheduled === 1 ? '' : 's'} scheduled for delivery now${held}\n`);
        return 0;
      }
      case 'drain': {
        const to = [...flags].find((f) => f.startsWith('--to='))?.slice('--to='.length) ?? (flags.has('--to') ? id : undefined);
        if (!to) {
          err.write('tern queue drain: needs --to HOST:PORT (another Tern node that relays for this one)\n');
          return 2;
        }
        // However long it takes: the server sends spaces while it works (the timeout is for silence).
        const r = (await controlRequest(sock, { cmd: 'queue.drain', to })) as DrainSummary;
        if (json) out.write(JSON.stringify(r) + '\n');
        else {
          out.write(`${r.moved} message${r.moved === 1 ? '' : 's'} handed to ${r.to}\n`);
          if (r.held.length) out.write(`${r.held.length} held, not drained (release or delete them, then drain again): ${r.held.join(' ')}\n`);
          for (const m of r.notTaken) out.write(`not taken: ${m.id}${m.reply ? `  (${replyLine(m.reply)})` : ''}\n`);
        }
        return r.held.length === 0 && r.notTaken.length === 0 ? 0 : 1;
      }
      case 'hold':
      case 'release':
      case 'delete': {
        if (!need(sub)) return 2;
        const ok = (await controlRequest(sock, { cmd: `queue.${sub}`, id })) as boolean;
        if (!ok) return notFound(err, id!);
        const done = { hold: 'held', release: 'released', delete: 'deleted' }[sub];
        out.write(json ? JSON.stringify({ id, [done]: true }) + '\n' : `${id}: ${done}\n`);
        return 0;
      }
    }
  } catch (e) {
    if (isNoServer(e, sock)) {
      err.write(
        `tern queue: no Tern server is running with data directory ${dataDir} (${origin}).\n` +
          `Start it with \`tern serve\` and the same config, or name the running server's config with --config FILE or TERN_CONFIG.\n`,
      );
    } else err.write(`tern queue: ${(e as Error).message}\n`);
    return 1;
  }
  err.write(`Usage:\n${QUEUE_USAGE}`);
  return 2;
}

/** Nothing listens on the control socket: it is missing, or left over from a server that stopped. */
function isNoServer(e: unknown, sock: string): boolean {
  return !fs.existsSync(sock) || (e instanceof Error && e.message.startsWith('no Tern server is running'));
}

function notFound(err: Out, id: string): number {
  err.write(`tern queue: no message ${id} in the queue\n`);
  return 1;
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function formatList(list: QueueSummary[]): string {
  if (list.length === 0) return 'The queue is empty.\n';
  const now = Date.now();
  const rows = list
    .map((m) => ({ m, created: Date.parse(m.createdAt), next: Date.parse(m.nextAttempt) }))
    .sort((a, b) => a.created - b.created)
    .map(({ m, created, next }) => {
      const waiting = m.recipients.filter((r) => r.status === 'queued' || r.status === 'deferred');
      const when = m.state === 'held' ? 'held' : m.state === 'active' ? 'now (active)' : next <= now ? 'due' : `in ${age(next - now)}`;
      const last = waiting.map((r) => r.lastReply).find((e) => e);
      return [m.id, age(now - created), String(m.size), m.from || '<>', waiting.map((r) => r.address).join(','), when, last ? replyLine(last) : ''];
    });
  const head = ['ID', 'AGE', 'SIZE', 'SENDER', 'RECIPIENTS', 'NEXT', 'LAST REPLY'];
  const widths = head.map((h, i) => Math.min(40, Math.max(h.length, ...rows.map((r) => r[i]!.length))));
  const fmt = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.slice(0, widths[i]).padEnd(widths[i]!))).join('  ').trimEnd();
  return [fmt(head), ...rows.map(fmt)].join('\n') + `\n${list.length} message${list.length === 1 ? '' : 's'}\n`;
}

function formatShow(m: QueueSummary & { manualAttempts?: number; envelope?: Envelope; dsnSuppressed?: SuppressedDsn[] }): string {
  const outside = m.envelope?.outside;
  const reply = (r: DeliveryReply | null) => (r ? `  (${replyLine(r)})` : '');
  const lines = [
    `id:           ${m.id}`,
    `received:     ${m.createdAt}`,
    `sender:       ${m.from || '<>'}`,
    `size:         ${m.size}`,
    `state:        ${m.state}`,
    // Manual retries count here but not in the backoff (src/queue/scheduler.ts).
    `attempts:     ${m.attempts}${m.manualAttempts ? ` (${m.manualAttempts} by tern queue retry)` : ''}`,
    `next attempt: ${m.state === 'held' ? 'held' : m.nextAttempt}`,
    'recipients:',
    ...m.recipients.map((r) => `  ${r.address}  ${r.status}${reply(r.lastReply)}`),
    // Mail from outside: whether DSNs may go to its sender (src/bounce/backscatter.ts), and the ones that did not.
    ...(outside ? [`sender check: ${outside.verified ? `verified by ${outside.verified}` : 'not verified'} (${outside.detail})`] : []),
    ...(m.dsnSuppressed ?? []).map((d) => `dsn suppressed: ${d.kind} for ${d.recipients.join(', ')} at ${new Date(d.at).toISOString()}: ${d.reason}`),
  ];
  return lines.join('\n') + '\n';
}
