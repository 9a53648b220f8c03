// What one webhook POST costs the sender in CPU, and what HTTP/1.1
// pipelining would save: the floor under the events-webhook row of
// bench/api.ts (docs/api-bench.md).
//
//   node bench/webhook-post.ts [--posts N] [--rounds R]
//   node bench/webhook-post.ts --latency MS [--posts N]
//
// This process (the sender) runs on CPU 0, a node:http receiver that answers
// 204 on CPU 1, both on 127.0.0.1. Each round sends N POSTs of a delivered
// event's payload (about 700 bytes, signed as the dispatcher signs) in
// each mode, interleaved, and reads the sender's user and system CPU:
//
// - `tern`: Tern's client as the dispatcher uses it (WebhookPoster.postEvent),
//   8 connections, 8 POSTs in flight (as many as the pipelined rows);
// - `pipelined-D`: a bare sender written for this measurement only (not a
//   client Tern ships), D requests outstanding on each of 8/D connections,
//   written together (one write per batch) and answered in order;
// - `batch-K`: K events in one POST (a JSON array, signed once) through
//   Tern's client: what a batch format would cost per event. Tern sends no
//   such POST (Standard Webhooks has no batches; the contract asks for one
//   POST per event); this is the figure for deciding whether to add one.
//
// Each figure is per event: per POST for every mode but batch-K.
//
// With --latency the receiver answers each POST after MS milliseconds, and
// the figure is how many POSTs a second Tern's client delivers with 8, 32 and
// 64 in flight (webhooks.concurrency): a webhook's throughput is about the
// POSTs in flight divided by its receiver's time to answer.
//
// Over loopback the sender's system time includes the kernel's TCP work for
// both ends of each segment it sends (loopback delivers in the sender's
// context), which a real network would not charge it.

import net from 'node:net';
import { fork } from 'node:child_process';
import http from 'node:http';
import { cli, median, pinPids, SERVER_CPU, LOAD_CPU, haveTaskset } from './lib.ts';
import { WebhookPoster, postTarget } from '../src/webhooks/post.ts';
import { signature, signingKey, newSecret } from '../src/webhooks/sign.ts';

const args = cli();

if (args.flag('receiver')) {
  const latency = args.num('latency', 0);
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => (latency > 0 ? setTimeout(() => res.writeHead(204).end(), latency) : res.writeHead(204).end()));
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as net.AddressInfo).port));
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}

async function main(): Promise<void> {
  const latency = args.num('latency', 0);
  const posts = args.num('posts', latency > 0 ? 2000 : 20_000);
  const rounds = args.num('rounds', 3);
  const receiver = fork(import.meta.filename, ['--receiver', '--latency', String(latency)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((r) => receiver.once('message', (m) => r(m as number)));
  pinPids(LOAD_CPU, [receiver.pid!]);
  pinPids(SERVER_CPU, [process.pid]);
  const key = signingKey(newSecret());
  const target = postTarget(new URL(`http://127.0.0.1:${port}/hook`));
  const body = Buffer.from(
    JSON.stringify({
      type: 'delivered',
      timestamp: new Date().toISOString(),
      data: {
        id: '01m97mm9fn000025k36d', type: 'delivered', timestamp: new Date().toISOString(), queueId: '0MXCU1BNJ010KHA6', recipient: 'bob@example.test',
        data: { attempt: 1, relay: { host: 'mx.example.test', ip: '192.0.2.25', port: 25 }, tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true }, reply: { code: 250, enhanced: '2.0.0', text: '2.0.0 Ok: queued as 4dQ1xY2z3' }, bounceClass: null, source: 'smtp', tags: null, transport: 'mx' },
      },
    }),
  );
  if (latency > 0) {
    console.log(`webhook throughput: a receiver that answers after ${latency} ms, ${posts} POSTs per setting`);
    console.log('\n| POSTs in flight | POSTs a second |\n|---|---|');
    for (const inFlight of [8, 32, 64]) {
      const t = performance.now();
      await viaTern(target, key, body, posts, inFlight);
      console.log(`| ${inFlight} | ${Math.round((posts / (performance.now() - t)) * 1000)} |`);
    }
    receiver.disconnect();
    return;
  }
  // `batch-K`: what a batch format would cost (Standard Webhooks has none, and the contract asks for
  // one POST per event, so Tern does not send these): K events in one JSON array, signed once, through
  // Tern's client; the figure is per event, not per POST.
  const batchBody = (k: number): Buffer => Buffer.concat([Buffer.from('['), ...Array.from({ length: k }, (_, i) => (i === 0 ? [body] : [Buffer.from(','), body])).flat(), Buffer.from(']')]);
  const batches = [10, 50];
  const modes: Record<string, () => Promise<void>> = {
    tern: () => viaTern(target, key, body, posts),
    'pipelined-2': () => pipelined(port, key, body, posts, 2),
    'pipelined-8': () => pipelined(port, key, body, posts, 8),
    ...Object.fromEntries(batches.map((k) => [`batch-${k}`, () => viaTern(target, key, batchBody(k), Math.ceil(posts / k))])),
  };
  const results = new Map<string, { user: number[]; system: number[] }>();
  console.log(`webhook POST cost: ${posts} POSTs per mode and round, ${rounds} rounds, ${body.length} B bodies${haveTaskset ? ', sender on CPU 0, receiver on CPU 1' : ', not pinned (no taskset)'}`);
  for (const name of Object.keys(modes)) await modes[name]!(); // warm-up
  for (let r = 0; r < rounds; r++) {
    for (const [name, run] of Object.entries(modes)) {
      const before = process.cpuUsage();
      await run();
      const used = process.cpuUsage(before);
      const e = results.get(name) ?? { user: [], system: [] };
      e.user.push(used.user / posts);
      e.system.push(used.system / posts);
      results.set(name, e);
      console.log(`  round ${r + 1} ${name.padEnd(12)} ${((used.user + used.system) / posts).toFixed(1)} µs CPU per event (user ${(used.user / posts).toFixed(1)}, system ${(used.system / posts).toFixed(1)})`);
    }
  }
  console.log('\n| mode | sender CPU µs per event | user | system |\n|---|---|---|---|');
  for (const [name, e] of results) {
    const total = e.user.map((u, i) => u + e.system[i]!);
    console.log(`| ${name} | ${median(total).toFixed(1)} (${Math.min(...total).toFixed(1)}–${Math.max(...total).toFixed(1)}) | ${median(e.user).toFixed(1)} | ${median(e.system).toFixed(1)} |`);
  }
  receiver.disconnect();
}

/** Tern's client, as the dispatcher drives it: `inFlight` POSTs in flight over at most as many connections. */
async function viaTern(target: ReturnType<typeof postTarget>, key: ReturnType<typeof signingKey>, body: Buffer, posts: number, inFlight = 8): Promise<void> {
  const poster = new WebhookPoster({ timeoutMs: 10_000, maxSockets: inFlight });
  let started = 0;
  let failed = 0;
  await new Promise<void>((resolve) => {
    let done = 0;
    const next = (): void => {
      const id = `ev${started++}`;
      const ts = Math.floor(Date.now() / 1000);
      void poster.postEvent(target, id, ts, signature(key, id, ts, body), body).then((r) => {
        if (r.status !== 204) failed++;
        if (++done === posts) resolve();
        else if (started < posts) next();
      });
    };
    for (let i = 0; i < inFlight; i++) next();
  });
  poster.close();
  if (failed > 0) throw new Error(`${failed} POSTs failed`);
}

/** For this measurement only: `depth` requests outstanding per connection, 8 in flight in all, each batch one write. */
async function pipelined(port: number, key: ReturnType<typeof signingKey>, body: Buffer, posts: number, depth: number): Promise<void> {
  const target = postTarget(new URL(`http://127.0.0.1:${port}/hook`));
  let sent = 0;
  let answered = 0;
  const request = (): Buffer => {
    const id = `ev${sent}`;
    const ts = Math.floor(Date.now() / 1000);
    const head = `${target.head}content-type: application/json\r\nwebhook-id: ${id}\r\nwebhook-timestamp: ${ts}\r\nwebhook-signature: ${signature(key, id, ts, body)}\r\ncontent-length: ${body.length}\r\n\r\n`;
    return Buffer.concat([Buffer.from(head, 'latin1'), body]);
  };
  const sockets: net.Socket[] = [];
  await new Promise<void>((resolve, reject) => {
    for (let c = 0; c < 8 / depth; c++) {
      const socket = net.connect(port, '127.0.0.1');
      sockets.push(socket);
      socket.setNoDelay(true);
      let outstanding = 0;
      let text = '';
      const fill = (): void => {
        const batch: Buffer[] = [];
        while (outstanding < depth && sent < posts) {
          batch.push(request());
          sent++;
          outstanding++;
        }
        if (batch.length > 0) socket.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
      };
      socket.on('data', (chunk: Buffer) => {
        // The receiver's 204s carry no body: each answer ends at its blank line.
        text += chunk.toString('latin1');
        let end;
        while ((end = text.indexOf('\r\n\r\n')) !== -1) {
          if (!text.startsWith('HTTP/1.1 204')) reject(new Error(`unexpected answer: ${text.slice(0, 40)}`));
          text = text.slice(end + 4);
          outstanding--;
          answered++;
        }
        if (answered === posts) resolve();
        else fill();
      });
      socket.on('error', reject);
      fill();
    }
  });
  for (const s of sockets) s.destroy();
}
