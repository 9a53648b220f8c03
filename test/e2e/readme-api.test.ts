// The README's "HTTP API" section, run as printed (issue 13: "curl examples
// that work as printed"). Every `$ ` line of its console blocks goes to bash,
// in order, with the real curl and the real `tern` command line, against a
// real server whose config matches the examples (hostname mx.example.test,
// the local domain example.test with alice and bob). Each answer must match
// the printed one, where only what cannot repeat may differ: queue and event
// ids, Message-IDs, webhook ids and secrets, timestamps, a duration. An id
// printed twice must come back the same both times (the queue id of a send is
// the one its GET shows; the event a webhook got is the one its deliveries
// list). `…` in the printed text stands for anything. The http block is the
// POST a webhook receiver gets: checked against what our receiver got, and
// its signature verified with the standardwebhooks package.
//
// Reading the README this way keeps it true: an example that drifts from the
// server's behaviour fails this test.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';
import { ROOT, writeConfig } from '../helpers/server.ts';
import { requireTool } from '../helpers/tools.ts';

/** The part of the README run here: from "### HTTP API" to the next heading of that level. */
export function apiSection(readme: string): string {
  const start = readme.indexOf('\n### HTTP API\n');
  assert.ok(start >= 0, 'README has an "HTTP API" section');
  const end = readme.indexOf('\n### ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

export type Step = { kind: 'command'; command: string; output: string } | { kind: 'request'; text: string };

/** The console blocks' commands (with their continuation lines) and printed output, and the http blocks, in order. */
export function stepsOf(section: string): Step[] {
  const steps: Step[] = [];
  for (const m of section.matchAll(/^```(console|http)\n([\s\S]*?)^```$/gm)) {
    if (m[1] === 'http') {
      steps.push({ kind: 'request', text: m[2]!.replace(/\n$/, '') });
      continue;
    }
    const lines = m[2]!.replace(/\n$/, '').split('\n');
    for (let i = 0; i < lines.length; ) {
      assert.ok(lines[i]!.startsWith('$ '), `a console block goes on with a command: ${lines[i]}`);
      let command = lines[i++]!.slice(2);
      while (command.endsWith('\\')) command += '\n' + lines[i++]!;
      const output: string[] = [];
      while (i < lines.length && !lines[i]!.startsWith('$ ')) output.push(lines[i++]!);
      steps.push({ kind: 'command', command, output: output.join('\n') });
    }
  }
  return steps;
}

/**
 * What cannot repeat from one run to the next, each with the pattern of its
 * kind. `same`: a value printed twice must come back the same twice. A
 * lookbehind only finds the value in the printed text; the actual one is
 * matched in the same place.
 */
const VOLATILE: { re: string; same: boolean }[] = [
  { re: String.raw`\bwh_[0-9a-f]{24}\b`, same: true },
  { re: String.raw`\bwhsec_[A-Za-z0-9+/]+={0,2}`, same: true },
  { re: String.raw`\bv1,[A-Za-z0-9+/]{43}=`, same: false },
  { re: String.raw`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`, same: true },
  { re: String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`, same: false },
  // A queue id: 16 of [0-9A-Z], with a digit and a letter (src/spool/spool.ts newId).
  { re: String.raw`\b(?=[0-9A-Z]*[0-9])(?=[0-9A-Z]*[A-Z])[0-9A-Z]{16}\b`, same: true },
  // An event id: 20 of Crockford's base32 in lower case, with a digit (src/events/events.ts EventIds).
  { re: String.raw`\b(?=[0-9a-z]*[0-9])[0-9abcdefghjkmnpqrstvwxyz]{20}\b`, same: true },
  // The time in a Message-ID that intake made: <queue id.ms in base 36@hostname> (src/intake/intake.ts).
  { re: String.raw`(?<=[0-9A-Z]{16}\.)[0-9a-z]{8}(?=@)`, same: false },
  { re: String.raw`(?<="durationMs":)\d+`, same: false },
  { re: String.raw`(?<=webhook-timestamp: )\d{10}\b`, same: false },
];

const ELLIPSIS = '…';
/** Every volatile kind as a group of its own (v0, v1, …), and the ellipsis. */
const anyVolatile = new RegExp([...VOLATILE.map((v, i) => `(?<v${i}>${v.re})`), ELLIPSIS].join('|'), 'g');
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Whether `actual` is `printed` up to its volatile values; on a match, the
 * printed-to-actual pairs of the values that must stay the same are added to
 * `seen`. Line breaks and indentation in the printed text (JSON wrapped for
 * reading) match any whitespace or none.
 */
export function matches(printed: string, actual: string, seen: Map<string, string>): boolean {
  let source = '';
  const groups: { token: string; same: boolean }[] = [];
  let last = 0;
  const literal = (s: string) => s.split(/\n[ \t]*/).map(escape).join('\\s*');
  for (const m of printed.matchAll(anyVolatile)) {
    source += literal(printed.slice(last, m.index));
    last = m.index + m[0].length;
    const token = m[0];
    if (token === ELLIPSIS) {
      source += '[\\s\\S]*?';
      continue;
    }
    const kind = VOLATILE[VOLATILE.findIndex((_, i) => m.groups![`v${i}`] !== undefined)]!;
    const known = kind.same ? seen.get(token) : undefined;
    const earlier = groups.findIndex((g) => g.same && g.token === token);
    if (known !== undefined) source += escape(known);
    else if (kind.same && earlier >= 0) source += `\\k<t${earlier}>`;
    else {
      groups.push({ token, same: kind.same });
      source += `(?<t${groups.length - 1}>${kind.re.replace(/^\(\?<=[^)]*\)/, '')})`;
    }
  }
  source += literal(printed.slice(last));
  const m = new RegExp(`^${source}$`).exec(actual);
  if (!m) return false;
  // And the other way round: two ids printed differently are two different ids.
  const images = new Map([...seen].map(([p, a]) => [a, p]));
  const fresh = groups.flatMap((g, i) => (g.same ? [[g.token, m.groups![`t${i}`]!] as const] : []));
  for (const [token, value] of fresh) {
    if ((images.get(value) ?? token) !== token) return false;
    images.set(value, token);
  }
  for (const [token, value] of fresh) seen.set(token, value);
  return true;
}

/**
 * An answer or request printed with its head: the first line as printed, each
 * printed header among the real ones (names in any case), then the body. `…`
 * for the head's rest or for the body stands for anything.
 */
export function matchesWithHead(printed: string, actual: string, seen: Map<string, string>): boolean {
  const [pHead, pBody] = splitHead(printed);
  const [aHead, aBody] = splitHead(actual);
  const [pFirst, ...pFields] = pHead.split('\n');
  const [aFirst, ...aFields] = aHead.split('\n');
  if (pFirst !== aFirst) return false;
  // The ids a matching header binds count only if the whole message matches.
  const trial = new Map(seen);
  const lowerName = (f: string) => f.slice(0, f.indexOf(':')).toLowerCase() + f.slice(f.indexOf(':'));
  for (const f of pFields) {
    if (f === ELLIPSIS) continue;
    if (!aFields.some((a) => matches(lowerName(f), lowerName(a), trial))) return false;
  }
  if (!(pBody === '' || pBody === ELLIPSIS || matches(pBody, aBody, trial))) return false;
  for (const [printedId, actualId] of trial) seen.set(printedId, actualId);
  return true;
}

function splitHead(s: string): [string, string] {
  const text = s.replace(/\r\n/g, '\n');
  if (text.endsWith(`\n${ELLIPSIS}`) && !text.includes('\n\n')) return [text.slice(0, -ELLIPSIS.length - 1), ELLIPSIS];
  const blank = text.indexOf('\n\n');
  return blank < 0 ? [text, ''] : [text.slice(0, blank), text.slice(blank + 2)];
}

describe('the README examples, pure parts', () => {
  it('reads the commands, their continuation lines and outputs', () => {
    const steps = stepsOf('### HTTP API\n\n```console\n$ curl -s a \\\n    -H b\n{"x":1}\n$ curl -s c\n```\n\n```http\nPOST / HTTP/1.1\n\n{}\n```\n');
    assert.deepEqual(steps, [
      { kind: 'command', command: 'curl -s a \\\n    -H b', output: '{"x":1}' },
      { kind: 'command', command: 'curl -s c', output: '' },
      { kind: 'request', text: 'POST / HTTP/1.1\n\n{}' },
    ]);
  });

  it('lets volatile values differ, holds a value printed twice to one actual value, and refuses anything else', () => {
    const seen = new Map<string, string>();
    const printed = '{"id":"0MXCU1BNJ010KHA6","at":"2026-12-07T05:31:11.558Z","again":"0MXCU1BNJ010KHA6"}';
    assert.ok(matches(printed, '{"id":"0MXD00000010ABCD","at":"2027-01-01T00:00:00.000Z","again":"0MXD00000010ABCD"}', seen));
    assert.equal(seen.get('0MXCU1BNJ010KHA6'), '0MXD00000010ABCD');
    assert.ok(!matches(printed, '{"id":"0MXD00000010ABCD","at":"2027-01-01T00:00:00.000Z","again":"0MXD00000010ABCE"}', new Map()), 'the same printed id, two actual ones');
    assert.ok(!matches(printed, '{"id":"0MXD00000010ABCE","at":"2027-01-01T00:00:00.000Z","again":"0MXD00000010ABCE"}', seen), 'an id seen before must come back');
    assert.ok(!matches('{"other":"0MXCU1BNJ010KHA7"}', '{"other":"0MXD00000010ABCD"}', seen), 'two printed ids cannot be one actual id');
    assert.ok(!matches('{"a":"0MXCU1BNJ010KHA8","b":"0MXCU1BNJ010KHA9"}', '{"a":"0MXD00000010ABCF","b":"0MXD00000010ABCF"}', new Map()), 'not even in one answer');
    assert.ok(!matches('{"status":"queued"}', '{"status":"suppressed"}', seen), 'literal text must match');
    assert.ok(!matches('{"a":1}', '{"a":1,"b":2}', seen), 'the whole answer must match');
    assert.ok(matches('{"a":1,…}', '{"a":1,"b":2}', seen), '… stands for anything');
    assert.ok(matches('{"a":1,\n "b":2}', '{"a":1,"b":2}', seen), 'wrapped JSON matches unwrapped');
  });

  it('compares an answer with its head on the printed fields only', () => {
    const seen = new Map<string, string>();
    const printed = 'HTTP/1.1 202 Accepted\nidempotent-replayed: true\n\n{"a":1}';
    assert.ok(matchesWithHead(printed, 'HTTP/1.1 202 Accepted\r\nDate: x\r\nIdempotent-Replayed: true\r\n\r\n{"a":1}', seen));
    assert.ok(!matchesWithHead(printed, 'HTTP/1.1 202 Accepted\r\nDate: x\r\n\r\n{"a":1}', seen));
    assert.ok(!matchesWithHead(printed, 'HTTP/1.1 200 OK\r\nidempotent-replayed: true\r\n\r\n{"a":1}', seen));
    assert.ok(matchesWithHead('HTTP/1.1 204 No Content\n…', 'HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n', seen));
    // A request whose header matches but whose body does not binds nothing.
    const request = 'POST /h HTTP/1.1\nwebhook-id: 01m97mm9fn000025k36d\n\n{"id":"01m97mm9fn000025k36d","n":1}';
    assert.ok(!matchesWithHead(request, 'POST /h HTTP/1.1\nwebhook-id: 01m98aaaaa0000aaaaaa\n\n{"id":"01m98aaaaa0000aaaaaa","n":2}', seen));
    assert.ok(matchesWithHead(request, 'POST /h HTTP/1.1\nwebhook-id: 01m98bbbbb0000bbbbbb\n\n{"id":"01m98bbbbb0000bbbbbb","n":1}', seen));
    assert.equal(seen.get('01m97mm9fn000025k36d'), '01m98bbbbb0000bbbbbb');
  });
});

const RETRY_FOR_MS = 10_000;

describe('the README HTTP API examples, run as printed', { skip: requireTool('curl', 'curl') }, () => {
  let cfg: ReturnType<typeof writeConfig>;
  let tern: RunningTern;
  let receiver: http.Server;
  const received: { head: string; body: string; headers: http.IncomingHttpHeaders }[] = [];
  let bin: string;

  before(async () => {
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const head = [`${req.method} ${req.url} HTTP/${req.httpVersion}`, ...Array.from({ length: req.rawHeaders.length / 2 }, (_, i) => `${req.rawHeaders[2 * i]!.toLowerCase()}: ${req.rawHeaders[2 * i + 1]}`)].join('\n');
        received.push({ head, body: Buffer.concat(chunks).toString('utf8'), headers: req.headers });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    cfg = writeConfig({
      hostname: 'mx.example.test',
      listeners: [{ role: 'http', address: '127.0.0.1', port: 0 }],
      domains: [{ name: 'example.test', mailboxes: ['alice', 'bob'] }],
      users: [],
    });
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger, fsync: false });
    // `tern` as the README runs it: this checkout's command line, on the server's config.
    bin = path.join(cfg.dir, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'tern'), `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, 'src/cli/main.ts')}" "$@"\n`, { mode: 0o755 });
  });

  after(async () => {
    await tern?.stop(500);
    await new Promise((r) => receiver?.close(r));
    fs.rmSync(cfg.dir, { recursive: true, force: true });
  });

  it('every command answers as printed, in order', async () => {
    const apiPort = tern.ports.find((p) => p.role === 'http')!.port;
    const hookPort = (receiver.address() as AddressInfo).port;
    const local = (s: string) => s.replaceAll('127.0.0.1:8025', `127.0.0.1:${apiPort}`).replaceAll('127.0.0.1:8080', `127.0.0.1:${hookPort}`);
    const seen = new Map<string, string>();
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, TERN_CONFIG: cfg.file, KEY: '' };
    const steps = stepsOf(apiSection(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')));
    assert.ok(steps.filter((s) => s.kind === 'command').length >= 20, `the section's commands: ${steps.length}`);
    let previous = '';
    for (const step of steps) {
      if (step.kind === 'request') {
        await checkRequest(step.text, local, seen);
        continue;
      }
      let command = step.command;
      // "…the same request again…": the command before, with its head shown.
      if (command.includes('…the same request again…')) command = previous.replace(/^curl -s /, 'curl -si ');
      previous = command;
      for (const [printed, actual] of seen) command = command.replaceAll(printed, actual);
      command = local(command);
      const expected = local(step.output);
      // Reads may have to wait for a delivery or a webhook to happen; a command that changes something runs once.
      const reads = /^curl -si? '?http/.test(command) && !/ -X | -d /.test(command);
      const deadline = Date.now() + (reads ? RETRY_FOR_MS : 0);
      for (;;) {
        const out = await run(command, env);
        const ok = expected.startsWith('HTTP/') ? matchesWithHead(expected, out, seen) : matches(expected, out.replace(/\n$/, ''), seen);
        if (ok) break;
        if (Date.now() >= deadline) assert.fail(`README command:\n$ ${step.command}\nprinted:\n${step.output}\ngot:\n${out}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }

    async function checkRequest(printed: string, local: (s: string) => string, seen: Map<string, string>): Promise<void> {
      const deadline = Date.now() + RETRY_FOR_MS;
      const expected = local(printed);
      for (;;) {
        const hit = received.find((r) => matchesWithHead(expected, `${r.head}\n\n${r.body}`, seen));
        if (hit) {
          // The receiver's side of the README: the signature verifies with the secret the webhook's creation printed.
          const secret = [...seen.entries()].find(([p]) => p.startsWith('whsec_'))?.[1];
          assert.ok(secret, 'the webhook secret was printed before its first POST');
          assert.doesNotThrow(() => new Webhook(secret).verify(hit.body, hit.headers as Record<string, string>));
          return;
        }
        if (Date.now() >= deadline) assert.fail(`README webhook POST:\n${printed}\nthe receiver got:\n${received.map((r) => `${r.head}\n\n${r.body}`).join('\n---\n')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    /** One command through bash, its stdout and stderr together, as a terminal shows them; a variable it sets is kept for the next. */
    async function run(command: string, env: NodeJS.ProcessEnv): Promise<string> {
      const script = `exec 2>&1\n${command}\nprintf '\\0%s' "$KEY"`;
      const stdout = await new Promise<string>((resolve, reject) =>
        execFile('bash', ['-c', script], { env, encoding: 'utf8', timeout: 30_000 }, (e, out) => (e ? reject(new Error(`${command}: ${e.message}\n${out}`)) : resolve(out))),
      );
      const nul = stdout.lastIndexOf('\0');
      env.KEY = stdout.slice(nul + 1);
      return stdout.slice(0, nul);
    }
  });
});
