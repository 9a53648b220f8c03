// The event path's CPU per message, part by part, in one process: what
// `events.enabled` and a webhook add to each message, without the rest of
// the server around it. bench/api.ts measures the same in a whole server
// (events-off, events-on, events-webhook), where the machine's drift
// between two-second rows is often larger than the thing measured; here
// each part is switched on in turn over the same synthetic messages.
//
//   node bench/events-path.ts [--messages N] [--rounds R] [--only CONFIG]
//
// --only runs one configuration (for a profiler: strace -c -f, perf, --cpu-prof).
// Each message makes the two events of a discarded 1 KB message (queued,
// then delivered, in the next batch, as in the server), emitted through the
// real EventStream; batches of 160 messages are drained through the real
// EventRecorder into a real embedded store (node:sqlite, WAL, in a temp
// directory). The configurations, interleaved round by round:
//
// - `emit`: the stream with one do-nothing subscriber (metrics and the log
//   are subscribers in the server whatever events.enabled says);
// - `store`: plus the events recorder (the events and their messages rows);
// - `store+dash`: plus the dashboard's aggregates, written in the same
//   transaction (the server's default);
// - `store+dash+webhook`: plus one webhook for every event: the outbox
//   fan-out, the dispatcher, and its POSTs to a node:http receiver on the
//   other CPU that answers 204; a round ends when the receiver has every
//   event, and the CPU is this process's (user + system) over the round.
//
// This process runs on CPU 0, the receiver on CPU 1.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fork } from 'node:child_process';
import { cli, median, pinPids, SERVER_CPU, LOAD_CPU, haveTaskset } from './lib.ts';
import { openStore, type Store } from '../src/store/store.ts';
import { EventStream } from '../src/events/events.ts';
import { EventRecorder } from '../src/api/events-store.ts';
import { StatsMaintainer } from '../src/dashboard/stats.ts';
import { Webhooks } from '../src/webhooks/webhooks.ts';
import type { QueuedMessage } from '../src/spool/types.ts';
import type { Logger } from '../src/util/log.ts';

const args = cli();
/** Messages per batch drained: about what 100 ms of events holds at this rate. */
const BATCH = 160;

if (args.flag('receiver')) {
  let hits = 0;
  // The driver asks to be told once the receiver has had `until` POSTs: one message each way, no polling.
  let until = Infinity;
  const tell = (): void => {
    if (hits >= until) {
      until = Infinity;
      process.send!({ hits });
    }
  };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      hits++;
      res.writeHead(204).end();
      tell();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as net.AddressInfo).port }));
  process.on('message', (m: { until: number }) => {
    until = m.until;
    tell();
  });
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}

type Config = 'emit' | 'store' | 'store+dash' | 'store+dash+webhook';

async function main(): Promise<void> {
  const messages = args.num('messages', 20_000);
  const rounds = args.num('rounds', 5);
  const receiver = fork(import.meta.filename, ['--receiver'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((r) => receiver.once('message', (m) => r((m as { port: number }).port)));
  /** Resolves once the receiver has had `n` POSTs in all (0: at once, with the count so far). */
  const hits = (n = 0) =>
    new Promise<number>((r) => {
      const timer = setTimeout(() => {
        throw new Error(`the receiver had fewer than ${n} POSTs after 120 s`);
      }, 120_000);
      receiver.once('message', (m) => {
        clearTimeout(timer);
        r((m as { hits: number }).hits);
      });
      receiver.send({ until: n });
    });
  pinPids(LOAD_CPU, [receiver.pid!]);
  pinPids(SERVER_CPU, [process.pid]);
  const all: Config[] = ['emit', 'store', 'store+dash', 'store+dash+webhook'];
  const only = args.str('only');
  if (only !== undefined && !all.includes(only as Config)) throw new Error(`--only takes one of ${all.join(', ')}`);
  const configs = only === undefined ? all : [only as Config];
  console.log(`event path: ${messages} messages (2 events each) per configuration and round, ${rounds} rounds${haveTaskset ? '; this process on CPU 0, the receiver on CPU 1' : '; not pinned (no taskset)'}`);
  const results = new Map<Config, { user: number; system: number }[]>();
  for (const c of configs) await run(c, Math.min(messages, 2000), port, hits); // warm-up
  for (let r = 0; r < rounds; r++) {
    // Each round in the other order than the last, so a drift of the machine does not favour one.
    for (const c of r % 2 === 0 ? configs : [...configs].reverse()) {
      const us = await run(c, messages, port, hits);
      results.set(c, [...(results.get(c) ?? []), us]);
      console.log(`  round ${r + 1} ${c.padEnd(20)} ${(us.user + us.system).toFixed(1)} µs CPU per message (user ${us.user.toFixed(1)}, system ${us.system.toFixed(1)})`);
    }
  }
  console.log('\n| configuration | CPU µs per message | user | system | added to the one above |\n|---|---|---|---|---|');
  let previous: number | null = null;
  for (const c of configs) {
    const xs = results.get(c)!.map((x) => x.user + x.system);
    const m = median(xs);
    console.log(
      `| ${c} | ${m.toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}) | ${median(results.get(c)!.map((x) => x.user)).toFixed(1)} | ${median(results.get(c)!.map((x) => x.system)).toFixed(1)} | ${previous === null ? '' : `${m >= previous ? '+' : ''}${(m - previous).toFixed(1)}`} |`,
    );
    previous = m;
  }
  receiver.disconnect();
}

/** Events emitted once the messages before `upTo` had both their events (the delivered ones of the last batch come with the next). */
function emitted(upTo: number, messages: number): number {
  const n = Math.min(upTo, messages);
  return n + Math.max(0, n - BATCH);
}

/** One configuration over `messages` messages; this process's CPU µs per message. */
async function run(config: Config, messages: number, port: number, hits: (n?: number) => Promise<number>): Promise<{ user: number; system: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-bench-events-'));
  const log: Logger = { debug() {}, info() {}, warn() {}, error(msg: string, fields?: object) { console.error(msg, fields); } } as unknown as Logger;
  const store: Store = openStore(dir);
  const events = new EventStream();
  events.subscribe(() => {});
  let recorder: EventRecorder | undefined;
  let webhooks: Webhooks | undefined;
  if (config !== 'emit') {
    recorder = new EventRecorder({ events, store, retentionMs: 30 * 86_400_000, log, flushMs: 60_000 });
    if (config !== 'store') recorder.alsoWrite(new StatsMaintainer(store.dashboard).write);
    if (config === 'store+dash+webhook') {
      webhooks = new Webhooks({ store: store.webhooks, log, timeoutMs: 10_000, retryForMs: 3 * 86_400_000, concurrency: 8 });
      webhooks.attach(recorder);
      const owner = { name: 'bench', hash: 'bench-key-hash', sendAs: [], admin: true, createdAt: Date.now() };
      store.addApiKey(owner);
      webhooks.create(owner, `http://127.0.0.1:${port}/hook`, null);
      webhooks.start();
    }
  }
  const before = webhooks ? await hits() : 0;
  const cpu = process.cpuUsage();
  let previous: QueuedMessage[] = [];
  let seq = 0;
  for (let i = 0; i < messages; i += BATCH) {
    const batch: QueuedMessage[] = [];
    for (let j = 0; j < BATCH && i + j < messages; j++) {
      const id = `${Date.now().toString(36).toUpperCase().padStart(9, '0')}${(seq++ % 1296).toString(36).toUpperCase().padStart(2, '0')}BENCH`;
      const msg = {
        envelope: { id, sender: 'load@load.test', recipients: [{ address: 'user@tern.test' }], client: { role: 'smtp' }, subject: 'Benchmark message', messageId: `<${id}@load.test>` },
        state: {},
        bodyLength: 1024,
        size: 1024,
        recovered: false,
      } as unknown as QueuedMessage;
      events.emit('queued', msg, 0);
      batch.push(msg);
    }
    for (const msg of previous) events.emit('delivered', msg, 0, 1, { reply: { code: 250, enhanced: '2.0.0', text: 'discarded' }, relay: null, tls: null }, 'discard');
    previous = batch;
    await recorder?.drain();
    // In the server a batch comes every 100 ms and the dispatcher keeps up between them: wait for it
    // (otherwise a backlog past the adopted rows' limit takes the claim path, which a keeping-up server does not).
    if (webhooks) await hits(before + emitted(i + BATCH, messages) - BATCH);
  }
  for (const msg of previous) events.emit('delivered', msg, 0, 1, { reply: { code: 250, enhanced: '2.0.0', text: 'discarded' }, relay: null, tls: null }, 'discard');
  await recorder?.drain();
  if (webhooks) await hits(before + 2 * messages);
  const used = process.cpuUsage(cpu);
  webhooks?.close();
  await recorder?.close();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { user: used.user / messages, system: used.system / messages };
}
