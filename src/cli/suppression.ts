// `tern suppression …`: the suppression list from the command line, on the
// same store as the server (<dataDir>/tern.db). A running server reads the
// list again within a second of a change made here (the table's change
// counter: src/store/suppressions.ts), so no signal or restart is needed.

import type { TernConfig } from '../config/types.ts';
import type { Store } from '../store/store.ts';
import { openConfiguredStore } from '../store/open.ts';
import type { SuppressionRecord } from '../store/suppressions.ts';
import { normalizeAddress } from './user.ts';

export const SUPPRESSION_USAGE = `  tern suppression list [--json]    the addresses outbound mail is not sent to, with why
  tern suppression add ADDRESS [--reason TEXT]
                                    stop sending to ADDRESS (from every source)
  tern suppression del ADDRESS      send to it again
`;

type Out = { write(s: string): unknown };

class UsageError extends Error {}
class ListError extends Error {}

/** Entries read per statement while listing: memory stays flat however long the list. */
const PAGE = 1000;

/** `argv` is everything after `suppression`; --config/-c (already used by the caller) is skipped. */
export function runSuppression(config: TernConfig, argv: string[], stdout: Out = process.stdout, stderr: Out = process.stderr): number {
  let store: Store | undefined;
  try {
    const positional: string[] = [];
    let json = false;
    let reason: string | undefined;
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === '--config' || a === '-c') i++;
      else if (a.startsWith('--config=')) continue;
      else if (a === '--json') json = true;
      else if (a === '--reason' || a.startsWith('--reason=')) {
        reason = a === '--reason' ? argv[++i] : a.slice('--reason='.length);
        if (reason === undefined || reason.trim() === '') throw new UsageError('--reason needs a text');
        if (/[\r\n]/.test(reason) || reason.length > 256) throw new UsageError('--reason: one line, at most 256 characters');
      } else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
      else positional.push(a);
    }
    const [sub, address, extra] = positional;
    if (!sub || extra !== undefined || !['list', 'add', 'del'].includes(sub) || (sub === 'list') !== (address === undefined)) throw new UsageError();
    if (sub !== 'list' && json) throw new UsageError();
    if (sub !== 'add' && reason !== undefined) throw new UsageError();
    store = openConfiguredStore(config);
    const list = store.suppressions;
    if (sub === 'list') {
      if (json) stdout.write('[');
      let after = '';
      let first = true;
      let count = 0;
      for (;;) {
        const page = list.page(after, PAGE);
        for (const r of page) {
          if (json) stdout.write(`${first ? '' : ','}${JSON.stringify(view(r))}`);
          else stdout.write(`${r.address}\t${r.source}\t${new Date(r.createdAt).toISOString()}\t${r.reason}${r.detail ? `\t${r.detail}` : ''}\n`);
          first = false;
          count++;
        }
        if (page.length < PAGE) break;
        after = page.at(-1)!.address;
      }
      if (json) stdout.write(']\n');
      else stdout.write(`${count} suppressed\n`);
      return 0;
    }
    const norm = normalizeAddress(address!);
    if (!norm) throw new ListError(`not an address: ${JSON.stringify(address)}`);
    // As the list matches (src/suppress/list.ts): the whole address, lower-cased.
    const key = norm.toLowerCase();
    if (sub === 'del') {
      if (!list.delete(key)) throw new ListError(`${key} is not on the list`);
      stdout.write(`${key}: removed; mail to it is sent again\n`);
      return 0;
    }
    const existing = list.get(key);
    if (existing && reason === undefined) {
      stdout.write(`${key}: already on the list (${existing.source}: ${existing.reason})\n`);
      return 0;
    }
    list.put({ address: key, reason: reason ?? 'added by an operator', source: 'cli', detail: null, createdAt: existing?.createdAt ?? Date.now() });
    stdout.write(`${key}: ${existing ? 'already on the list; reason updated' : 'suppressed'}\n`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      stderr.write(`${e.message ? `tern suppression: ${e.message}\n` : ''}Usage:\n${SUPPRESSION_USAGE}`);
      return 2;
    }
    if (e instanceof ListError) {
      stderr.write(`tern suppression: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    store?.close();
  }
}

function view(r: SuppressionRecord) {
  return { address: r.address, reason: r.reason, source: r.source, detail: r.detail, createdAt: new Date(r.createdAt).toISOString() };
}
