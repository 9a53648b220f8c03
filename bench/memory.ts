// Memory, side by side, each server freshly started for each measurement
// (so that a heap grown by earlier load does not hide the figure) and pinned
// to CPU 0, the client (this driver) on CPU 1:
//
//   idle   RSS per idle connection (bench/idle.ts): 5,000 connections, each
//          past its greeting and EHLO, then silent; (RSS after − before) /
//          connections, after an unmeasured 200-connection warm-up. Tern and
//          Haraka. Not Postfix: one smtpd process per connection, and
//          default_process_limit in the thousands is not how it is run.
//   big    RSS while one 100 MB (10^8 octets) message comes in (bench/bigmsg.ts): VmRSS of
//          the server's processes sampled every 20 ms from DATA to the reply
//          after the end of data; peak − before. Tern, Haraka, Postfix (its
//          message_size_limit raised as for the others), after a warm-up of
//          20 small messages.
//
// Peers as in bench/peers.ts; Tern's connection limits are raised to 6,000
// for the idle test (that is the only difference).
//
//   node bench/memory.ts [--connections N] [--big-mb N] [--json FILE]

import fs from 'node:fs';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { measureBigMessage } from './bigmsg.ts';
import type { BigMessageResult } from './bigmsg.ts';
import { measureIdle } from './idle.ts';
import type { IdleResult } from './idle.ts';
import { measureLatency } from './latency.ts';
import { cachedPids, cli, haveTaskset, machine, pinSelf, rssKiB, waitUntil } from './lib.ts';
import { startHarakaPeer, startPostfixPeer, startTernPeer } from './peers.ts';
import type { Peer } from './peers.ts';

const args = cli();
const CONNECTIONS = args.num('connections', 5000);
/** The big message's size: 100 MB (10^8 octets). */
const BIG = Math.round(args.num('big-mb', 100) * 1e6);
const jsonOut = args.str('json');
const IDLE_LIMITS = { connections: 6000, connectionsPerIp: 6000 };

export interface BigRow extends BigMessageResult { peer: string; rssAfterDeliveryKiB: number; error?: string }
export interface IdleRow extends IdleResult { peer: string }
export interface MemoryResult {
  kind: 'memory';
  connections: number;
  bigBytes: number;
  idleTernLimits: { connections: number; connectionsPerIp: number };
  idle: IdleRow[];
  big: BigRow[];
  machine: ReturnType<typeof machine>;
  seconds: number;
}

const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

async function withPeer<T>(start: () => Promise<Peer>, fn: (p: Peer) => Promise<T>): Promise<T> {
  const p = await start();
  try {
    return await fn(p);
  } finally {
    await p.stop();
  }
}

async function idle(p: Peer): Promise<IdleRow> {
  const base = { host: '127.0.0.1', port: p.port, pids: p.pids };
  // Warm-up: the same path (connect, EHLO, idle, close) a few hundred times, so code compiled on first use is not counted.
  await measureIdle({ ...base, connections: 200, settleMs: 0 });
  const r = await measureIdle({ ...base, connections: CONNECTIONS });
  console.log(`  ${p.name.padEnd(8)} ${r.opened}/${r.connections} open in ${r.openSeconds.toFixed(1)} s, RSS ${mib(r.rssBeforeKiB)} -> ${mib(r.rssAfterKiB)}: ${(r.bytesPerConnection / 1024).toFixed(1)} KiB per connection (slope ${(r.marginalBytesPerConnection / 1024).toFixed(1)} KiB)${Object.keys(r.refused).length ? `, refused ${JSON.stringify(r.refused)}` : ''}${r.lostWhileIdle ? `, ${r.lostWhileIdle} closed while idle` : ''}`);
  return { peer: p.name, ...r };
}

async function big(p: Peer): Promise<BigRow> {
  const base = { host: '127.0.0.1', port: p.port, from: 'load@load.test', to: p.to };
  const done0 = p.done();
  const w = await measureLatency({ ...base, sessions: 2, messages: 20, size: 1024, reuse: true, timeoutMs: 60_000 });
  await waitUntil(() => p.done() - done0 >= 20 - w.errors, 60_000, 20);
  const pids = cachedPids(p.pids, 200);
  let r: BigMessageResult;
  try {
    r = await measureBigMessage({ ...base, sizeBytes: BIG, pids, timeoutMs: 300_000 });
  } catch (e) {
    console.log(`  ${p.name.padEnd(8)} FAILED: ${(e as Error).message}`);
    const nan = NaN;
    return { peer: p.name, sizeBytes: BIG, seconds: nan, rssBeforeKiB: nan, rssPeakKiB: nan, rssGrowthKiB: nan, reply: '', sendMBps: nan, tailSeconds: nan, samples: 0, rssAfterDeliveryKiB: nan, error: (e as Error).message };
  }
  const accepted = r.reply.startsWith('2');
  if (accepted && !(await waitUntil(() => p.done() - done0 >= 21 - w.errors, 120_000, 50))) console.warn(`  ${p.name}: the big message was not handled within 120 s`);
  const after = rssKiB(p.pids());
  console.log(`  ${p.name.padEnd(8)} ${(r.sizeBytes / 1e6).toFixed(0)} MB in ${r.seconds.toFixed(2)} s, RSS ${mib(r.rssBeforeKiB)} -> peak ${mib(r.rssPeakKiB)} (+${mib(r.rssGrowthKiB)}), after delivery ${mib(after)}; ${r.reply.split('\n').pop()}`);
  return { peer: p.name, ...r, rssAfterDeliveryKiB: after, ...(accepted ? {} : { error: r.reply }) };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  pinSelf();
  const dns = await startDnsServer({});
  const idleRows: IdleRow[] = [];
  const bigRows: BigRow[] = [];
  try {
    console.log(`memory: ${CONNECTIONS} idle connections (a fresh server each)`);
    idleRows.push(await withPeer(() => startTernPeer('tern', dns.address, IDLE_LIMITS), idle));
    idleRows.push(await withPeer(() => startHarakaPeer(), idle));
    console.log(`memory: one ${(BIG / 1e6).toFixed(0)} MB message (a fresh server each)`);
    for (const start of [() => startTernPeer('tern', dns.address), () => startHarakaPeer(), () => startPostfixPeer()]) {
      bigRows.push(await withPeer(start, big));
    }
  } finally {
    await dns.close();
  }
  const out: MemoryResult = {
    kind: 'memory', connections: CONNECTIONS, bigBytes: BIG, idleTernLimits: IDLE_LIMITS, idle: idleRows, big: bigRows, machine: machine(), seconds: (Date.now() - t0) / 1000,
  };
  if (!haveTaskset) console.log('  (not pinned: taskset missing or fewer than 2 CPUs)');
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(out, null, 2));
}

await main();
