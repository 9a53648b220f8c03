import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, checkConfig, loadConfig, parseDuration, parseSize, type ConfigProblem } from './load.ts';
import { DEFAULT_LIMITS, DEFAULT_QUEUE, defaultConfig } from './defaults.ts';
import { runConfigCheck } from '../cli/config-check.ts';
import { makeSelfSigned } from '../server/tls.ts';
import { Directory, MAX_ALIAS_DEPTH } from '../policy/directory.ts';

// Two real pairs: the loader parses the certificate and key and checks that they belong together.
const PAIR = await makeSelfSigned('mx.tern.test');
const OTHER = await makeSelfSigned('other.tern.test');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-config-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function write(text: string, name = `c${n++}.yaml`): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}
const problemsOf = (text: string): ConfigProblem[] => checkConfig(write(text)).problems;
/** The one problem at `p`, failing the test when there is none or several. */
function problemAt(problems: ConfigProblem[], p: string): ConfigProblem {
  const found = problems.filter((x) => x.path === p);
  assert.equal(found.length, 1, `expected one problem at ${p}, got ${JSON.stringify(problems, null, 1)}`);
  return found[0]!;
}

const EXAMPLE = `hostname: mx.tern.test
dataDir: /tmp/tern-data
listeners:
  - { role: smtp, address: 127.0.0.1, port: 2525 }
  - { role: submission, address: 127.0.0.1, port: 2587 }
  - { role: submissions, address: 127.0.0.1, port: 2465 }
tls: { cert: CERT, key: KEY }   # optional; self-signed when absent
domains:
  - name: tern.test
    mailboxes: [alice, bob]
    aliases: { postmaster: alice, team: [alice, bob] }
    catchAll: bob                                    # optional
trustedNetworks: []                                  # clients that may relay without AUTH
limits: { messageSize: 26214400, recipients: 100, connections: 1000, connectionsPerIp: 50 }
dns: { servers: ["127.0.0.1:5353"] }
queue:
  retrySchedule: [1m, 5m, 15m, 30m, 1h]
  maxLifetime: 5d
  delayWarning: 4h
`;

describe('loadConfig', () => {
  it('loads the documented example exactly as written', () => {
    const cert = write(PAIR.cert, 'cert.pem');
    const key = write(PAIR.key, 'key.pem');
    const file = write(EXAMPLE.replace('CERT', cert).replace('KEY', key));
    const c = loadConfig(file);
    assert.deepEqual(c, {
      hostname: 'mx.tern.test',
      dataDir: '/tmp/tern-data',
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 2525 },
        { role: 'submission', address: '127.0.0.1', port: 2587 },
        { role: 'submissions', address: '127.0.0.1', port: 2465 },
      ],
      tls: { cert, key },
      domains: [{
        name: 'tern.test',
        mailboxes: ['alice', 'bob'],
        aliases: { postmaster: ['alice'], team: ['alice', 'bob'] },
        catchAll: 'bob',
      }],
      trustedNetworks: [],
      limits: {
        messageSize: 26214400, recipients: 100, connections: 1000, connectionsPerIp: 50,
        lineLength: 1000, commandLineLength: 512, errors: 10, maxReceived: 100, minDataRate: 500,
        timeouts: { command: 300_000, data: 300_000, greeting: 0, evictAfter: 5000 },
      },
      queue: { retrySchedule: [60_000, 300_000, 900_000, 1_800_000, 3_600_000], maxLifetime: 432_000_000, delayWarning: 14_400_000 },
      dns: { servers: ['127.0.0.1:5353'], timeout: 5000, dnssec: false },
      outbound: {
        port: 25, heloName: 'mx.tern.test', concurrency: 100, perDestination: 10, maxMxHosts: 10,
        // An optional key that is absent is left out (no smarthost), like tls above.
        tls: 'opportunistic', plaintextFallback: true, connectionReuse: 5000, mtaSts: true, mtaStsPort: 443,
        timeouts: { connect: 30_000, command: 300_000, dataBlock: 180_000, dataEnd: 600_000 },
      },
      users: [],
      submission: { messagesPerHour: 1000, recipientsPerMessage: 100, authOnSmtp: false, minPasswordLength: 12 },
      log: { level: 'info' },
      http: { metricsFrom: ['127.0.0.0/8', '::1/128'] },
      events: { enabled: true, retention: 30 * 24 * 3600 * 1000 },
      webhooks: { timeout: 10_000, retryFor: 3 * 24 * 3600 * 1000, concurrency: 32 },
      suppression: { hardBounces: true, complaints: true, complaintAddresses: [] },
      mtaSts: { mode: 'testing', mx: ['mx.tern.test'], maxAge: 604_800_000 },
      tlsRpt: { enabled: true, organization: 'mx.tern.test', contact: 'postmaster@mx.tern.test' },
      store: {},
      edge: {
        dnsbl: { zones: [], cacheTtl: 300_000 },
        greylist: { enabled: false, delay: 300_000, expire: 172_800_000, keep: 3_110_400_000 },
        rate: { connectionsPerMinute: 0, messagesPerHour: 0 },
        proxyFrom: [],
        proxyTimeout: 5000,
      },
      plugins: [],
      inbound: {
        enabled: true, authservId: 'mx.tern.test', timeout: 30_000, spf: { onFail: 'mark' }, dmarc: { enforce: true }, trustedForwarders: [], domains: {},
      },
      source: file,
    });
  });

  it('fills in defaults for everything a file leaves out', () => {
    const c = loadConfig(write('hostname: MX.Example.org\n'));
    assert.equal(c.hostname, 'MX.Example.org');
    assert.equal(c.dataDir, path.resolve('data'));
    assert.deepEqual(c.listeners.map((l) => l.port), [2525, 2587, 2465, 8025]);
    assert.deepEqual(c.domains.map((d) => [d.name, d.mailboxes]), [['localhost', '*'], ['mx.example.org', '*']]);
    assert.deepEqual(c.limits, DEFAULT_LIMITS);
    assert.deepEqual(c.queue, DEFAULT_QUEUE);
    assert.deepEqual(c.dns, { servers: [], timeout: 5000, dnssec: false });
    assert.equal(c.tls, undefined);
    assert.equal(c.log.level, 'info');
  });

  it('gives the embedded defaults without a file, as a fresh copy', () => {
    const c = loadConfig();
    assert.equal(c.hostname, os.hostname());
    assert.equal(c.source, undefined);
    assert.equal(c.domains[0]!.name, 'localhost');
    assert.deepEqual(c.listeners.map((l) => `${l.address}:${l.port}/${l.role}`),
      ['127.0.0.1:2525/smtp', '127.0.0.1:2587/submission', '127.0.0.1:2465/submissions', '127.0.0.1:8025/http']);
    c.queue.retrySchedule.push(1);
    c.limits.timeouts.command = 1;
    assert.equal(defaultConfig().queue.retrySchedule.length, 5);
    assert.equal(defaultConfig().limits.timeouts.command, 300_000);
  });

  it('resolves relative paths against the file\'s directory', () => {
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub);
    fs.writeFileSync(path.join(sub, 'c.pem'), PAIR.cert);
    fs.writeFileSync(path.join(sub, 'k.pem'), PAIR.key);
    const file = path.join(sub, 'tern.yaml');
    fs.writeFileSync(file, 'dataDir: ./spool\ntls: { cert: c.pem, key: k.pem }\n');
    const c = loadConfig(path.relative(process.cwd(), file));
    assert.equal(c.dataDir, path.join(sub, 'spool'));
    assert.deepEqual(c.tls, { cert: path.join(sub, 'c.pem'), key: path.join(sub, 'k.pem') });
    assert.equal(c.source, file);
  });

  it('normalizes names and accepts the extra limits, timeouts and log keys', () => {
    const c = loadConfig(write(`
domains:
  - name: Example.ORG.
    mailboxes: [Alice]
    aliases: { PostMaster: alice, fwd: Joe@Remote.Example, "first.last": alice@example.org }
  - name: other.test
    aliases: { x: anyone }
limits:
  messageSize: 10M
  lineLength: 2000
  commandLineLength: 1024
  errors: 3
  minDataRate: 2000
  timeouts: { command: 30s, data: 1m, greeting: 500ms, evictAfter: 2s }
log: { level: debug }
listeners: [{ role: smtp, address: "::1", port: 0 }, { role: submission, address: "::1", port: 0 }]
trustedNetworks: [10.0.0.0/8, 192.168.1.7, "fd00::/8", "::1"]
`));
    assert.deepEqual(c.domains, [
      {
        name: 'example.org',
        mailboxes: ['alice'],
        aliases: { postmaster: ['alice'], fwd: ['Joe@remote.example'], 'first.last': ['alice@example.org'] },
      },
      { name: 'other.test', mailboxes: '*', aliases: { x: ['anyone'] } },
    ]);
    assert.equal(c.limits.messageSize, 10 * 1024 * 1024);
    assert.deepEqual([c.limits.lineLength, c.limits.commandLineLength, c.limits.errors], [2000, 1024, 3]);
    assert.deepEqual(c.limits.timeouts, { command: 30_000, data: 60_000, greeting: 500, evictAfter: 2000 });
    assert.equal(c.limits.minDataRate, 2000);
    assert.equal(c.log.level, 'debug');
    assert.deepEqual(c.trustedNetworks, ['10.0.0.0/8', '192.168.1.7', 'fd00::/8', '::1']);
    assert.equal(c.listeners.length, 2, 'port 0 never counts as a duplicate');
  });

  it('domains[].delivery: discard is kept; maildir (the default) leaves the key out', () => {
    const c = loadConfig(write('domains:\n  - { name: sink.test, delivery: discard }\n  - { name: a.test, delivery: maildir }\n  - { name: b.test }\n'));
    assert.deepEqual(c.domains.map((d) => d.delivery), ['discard', undefined, undefined]);
    const p = problemAt(problemsOf('domains:\n  - name: a.test\n    delivery: lmtp\n'), 'domains[0].delivery');
    assert.equal(p.line, 3);
  });

  it('treats an empty file as all defaults', () => {
    assert.deepEqual(checkConfig(write('')).problems, []);
    assert.deepEqual(loadConfig(write('# nothing\n')).limits, DEFAULT_LIMITS);
  });
});

describe('problems name the key and its line', () => {
  it('unknown top-level key', () => {
    const p = problemAt(problemsOf('hostname: a.test\nlisten: []\n'), 'listen');
    assert.equal(p.line, 2);
    assert.match(p.message, /^unknown key \(expected one of: hostname, dataDir, store, listeners/);
  });

  it('unknown nested key', () => {
    const problems = problemsOf('limits:\n  messageSize: 1000\n  timeouts:\n    comand: 5m\ndomains:\n  - name: a.test\n    mailbox: [x]\n');
    assert.equal(problemAt(problems, 'limits.timeouts.comand').line, 4);
    assert.match(problemAt(problems, 'limits.timeouts.comand').message, /expected one of: command, data, greeting/);
    assert.equal(problemAt(problems, 'domains[0].mailbox').line, 7);
  });

  it('wrong type', () => {
    const problems = problemsOf('limits:\n  recipients: lots\ntrustedNetworks: 10.0.0.0/8\n');
    assert.deepEqual(problemAt(problems, 'limits.recipients'), { path: 'limits.recipients', line: 2, message: 'must be an integer, not string "lots"' });
    assert.deepEqual(problemAt(problems, 'trustedNetworks'), { path: 'trustedNetworks', line: 3, message: 'must be a list, not string "10.0.0.0/8"' });
  });

  it('a block value is reported on its key\'s line', () => {
    const problems = problemsOf('log: {}\nlimits:\n  recipients:\n    - 1\n    - 2\n');
    assert.deepEqual(problems, [{ path: 'limits.recipients', line: 3, message: 'must be an integer, not a list' }]);
  });

  it('missing required key, and tls needs both files', () => {
    const problems = problemsOf('listeners:\n  - role: smtp\n    port: 25\ntls: { cert: /nonexistent/cert.pem }\n');
    assert.equal(problemAt(problems, 'listeners[0].address').line, 2);
    assert.equal(problemAt(problems, 'listeners[0].address').message, 'required key is missing');
    assert.equal(problemAt(problems, 'tls.key').line, 4);
    assert.match(problemAt(problems, 'tls.cert').message, /cannot read \/nonexistent\/cert\.pem: ENOENT/);
  });

  it('bad port and listener address', () => {
    const problems = problemsOf('listeners:\n  - { role: smtp, address: 127.0.0.1, port: 25 }\n  - { role: smtps, address: localhost, port: 65536 }\n');
    assert.deepEqual(problemAt(problems, 'listeners[1].port'), { path: 'listeners[1].port', line: 3, message: 'must be 0-65535' });
    assert.equal(problemAt(problems, 'listeners[1].address').message, '"localhost" is not an IP address');
    assert.equal(problemAt(problems, 'listeners[1].role').message, 'must be one of: smtp, submission, submissions, http');
  });

  it('tls only on http listeners, and no PROXY protocol there', () => {
    const problems = problemsOf('listeners:\n  - { role: http, address: 127.0.0.1, port: 8025, tls: true }\n  - { role: smtp, address: 127.0.0.1, port: 25, tls: true }\n  - { role: http, address: 127.0.0.1, port: 8026, proxyProtocol: true }\n');
    assert.match(problemAt(problems, 'listeners[1].tls').message, /only http listeners take tls/);
    // (edge.proxyFrom's own check reports the missing proxies there too.)
    assert.ok(problems.some((p) => p.path === 'listeners[2].proxyProtocol' && p.message === 'not supported on http listeners'), JSON.stringify(problems));
    assert.equal(problems.filter((p) => p.path.startsWith('listeners[0]')).length, 0);
  });

  it('duplicate listener', () => {
    const problems = problemsOf('listeners:\n  - { role: smtp, address: 127.0.0.1, port: 25 }\n  - role: submission\n    address: 127.0.0.1\n    port: 25\n');
    assert.deepEqual(problems, [{ path: 'listeners[1]', line: 3, message: 'duplicate of listeners[0] (127.0.0.1:25)' }]);
  });

  it('bad CIDR', () => {
    const problems = problemsOf('trustedNetworks:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n  - 2001:db8::/129\n  - example.com\n');
    assert.equal(problemAt(problems, 'trustedNetworks[1]').line, 3);
    assert.match(problemAt(problems, 'trustedNetworks[1]').message, /prefix length must be 0-32/);
    assert.match(problemAt(problems, 'trustedNetworks[2]').message, /prefix length must be 0-128/);
    assert.equal(problemAt(problems, 'trustedNetworks[3]').message, '"example.com" is not an IP address or CIDR');
    assert.equal(problems.length, 3);
  });

  it('alias or catch-all pointing to nothing', () => {
    const problems = problemsOf(`domains:
  - name: tern.test
    mailboxes: [alice]
    aliases:
      postmaster: alicia
      team: [alice, bob@other.test, nobody@other.test]
      abuse: postmaster
    catchAll: carol
  - name: other.test
    mailboxes: [bob]
`);
    assert.deepEqual(problemAt(problems, 'domains[0].aliases.postmaster'),
      { path: 'domains[0].aliases.postmaster', line: 5, message: '"alicia" is not a mailbox or alias of tern.test' });
    assert.equal(problemAt(problems, 'domains[0].aliases.team[2]').message, '"nobody" is not a mailbox or alias of other.test');
    assert.equal(problemAt(problems, 'domains[0].catchAll').line, 8);
    assert.equal(problems.length, 3, 'aliases to aliases and to other configured domains are fine');
  });

  it('bad domain names, duplicate domains, bad local parts', () => {
    const problems = problemsOf(`domains:
  - name: a.test
    mailboxes: ["", ${'x'.repeat(65)}, ok, OK]
  - name: A.Test.
  - name: -bad-.test
  - name: 10.0.0.1
`);
    assert.equal(problemAt(problems, 'domains[0].mailboxes[0]').message, 'local part must not be empty');
    assert.match(problemAt(problems, 'domains[0].mailboxes[1]').message, /longer than 64 octets/);
    assert.equal(problemAt(problems, 'domains[0].mailboxes[3]').message, 'duplicate mailbox "ok"');
    assert.deepEqual(problemAt(problems, 'domains[1].name'), { path: 'domains[1].name', line: 4, message: 'duplicate domain a.test' });
    assert.match(problemAt(problems, 'domains[2].name').message, /label "-bad-"/);
    assert.equal(problemAt(problems, 'domains[3].name').message, 'must be a domain name, not an IP address');
  });

  it('bad duration and size', () => {
    const problems = problemsOf('queue:\n  retrySchedule: [1m, 5 minutes, 0]\n  maxLifetime: forever\nlimits: { messageSize: 25X }\n');
    assert.equal(problemAt(problems, 'queue.retrySchedule[1]').line, 2);
    assert.match(problemAt(problems, 'queue.retrySchedule[1]').message, /^invalid duration "5 minutes"/);
    assert.equal(problemAt(problems, 'queue.retrySchedule[2]').message, 'must be longer than 0');
    assert.equal(problemAt(problems, 'queue.maxLifetime').line, 3);
    assert.equal(problemAt(problems, 'limits.messageSize').line, 4);
  });

  it('bad dns server', () => {
    const problems = problemsOf('dns:\n  servers: ["127.0.0.1:5353", "[::1]:53", "::1", "1.2.3.4:99999", "ns.example"]\n');
    assert.deepEqual(problems.map((p) => [p.path, p.line]), [['dns.servers[3]', 2], ['dns.servers[4]', 2]]);
  });

  it('YAML syntax error', () => {
    const problems = problemsOf('hostname: a.test\nlisteners: [\n  { role: smtp\nlog: {level: info}\n');
    assert.ok(problems.length > 0);
    assert.equal(problems[0]!.path, '');
    assert.ok(problems[0]!.line !== undefined && problems[0]!.line >= 2, `line ${problems[0]!.line}`);
  });

  it('duplicate YAML key', () => {
    const [p, ...rest] = problemsOf('hostname: a.test\nlog: {}\nhostname: b.test\n');
    assert.deepEqual(rest, []);
    assert.equal(p!.line, 3);
    assert.match(p!.message, /unique/);
  });

  it('unreadable file', () => {
    const { config, problems } = checkConfig(path.join(dir, 'missing.yaml'));
    assert.equal(config, undefined);
    assert.match(problems[0]!.message, /^cannot read file: ENOENT/);
  });

  it('reports several problems together, in line order, and throws them all', () => {
    const file = write('bogus: 1\nlisteners:\n  - { role: smtp, address: 1.2.3.4, port: -1 }\ntrustedNetworks: [300.0.0.0/8]\nqueue: { maxLifetime: soon }\n');
    assert.throws(() => loadConfig(file), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(e.problems.map((p) => [p.line, p.path]),
        [[1, 'bogus'], [3, 'listeners[0].port'], [4, 'trustedNetworks[0]'], [5, 'queue.maxLifetime']]);
      assert.equal(e.message.split('\n').length, 4);
      assert.equal(e.message.split('\n')[1], `${file}:3: listeners[0].port: must be 0-65535`);
      return true;
    });
  });
});

describe('units', () => {
  it('parses durations', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('4h'), 14_400_000);
    assert.equal(parseDuration('5d'), 432_000_000);
    assert.equal(parseDuration('1w'), 604_800_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration(90), 90_000, 'a bare number is seconds');
    assert.equal(parseDuration('90'), 90_000);
    assert.equal(parseDuration(0), 0);
    for (const bad of ['', 'm', '5 m', '5x', '-1s', '1h 30m', '5mm']) assert.throws(() => parseDuration(bad), /invalid duration/, bad);
    assert.throws(() => parseDuration(-1), /invalid duration/);
    assert.throws(() => parseDuration(Number.NaN), /invalid duration/);
  });

  it('parses sizes in binary multiples', () => {
    assert.equal(parseSize(26214400), 26214400);
    assert.equal(parseSize('1000'), 1000);
    assert.equal(parseSize('512K'), 512 * 1024);
    assert.equal(parseSize('25M'), 25 * 1024 * 1024);
    assert.equal(parseSize('1G'), 1024 ** 3);
    assert.equal(parseSize('25MB'), 25 * 1024 * 1024);
    assert.equal(parseSize('25MiB'), 25 * 1024 * 1024);
    assert.equal(parseSize('1.5k'), 1536);
    for (const bad of ['', 'M', '25X', '-1', '1 2M']) assert.throws(() => parseSize(bad), /invalid size/, bad);
    assert.throws(() => parseSize(1.5), /invalid size/);
  });
});

describe('runConfigCheck', () => {
  const sink = () => {
    const chunks: string[] = [];
    return { chunks, write: (s: string) => chunks.push(s) };
  };

  it('prints FILE: OK and returns 0 for a good file', () => {
    const file = write('hostname: a.test\n');
    const out = sink();
    const err = sink();
    assert.equal(runConfigCheck(file, out, err), 0);
    assert.deepEqual(out.chunks.join(''), `${file}: OK\n`);
    assert.deepEqual(err.chunks, []);
  });

  it('prints FILE:LINE: path: message per problem and returns 1', () => {
    const file = write('hostname: a.test\nlimits: { messageSize: huge, extra: 1 }\n');
    const out = sink();
    const err = sink();
    assert.equal(runConfigCheck(file, out, err), 1);
    assert.deepEqual(out.chunks, []);
    const lines = err.chunks.join('').trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.ok(lines.includes(`${file}:2: limits.extra: unknown key (expected one of: messageSize, recipients, connections, connectionsPerIp, lineLength, commandLineLength, errors, maxReceived, minDataRate, timeouts)`), lines.join('\n'));
    assert.ok(lines.some((l) => l.startsWith(`${file}:2: limits.messageSize: invalid size "huge"`)), lines.join('\n'));
  });

  it('outbound: smarthost defaults, and a password without TLS is refused', () => {
    const good = write('outbound:\n  port: 2526\n  smarthost: { host: relay.example, auth: { user: u, password: p } }\n');
    const { config } = checkConfig(good);
    assert.equal(config!.outbound.port, 2526);
    assert.deepEqual(config!.outbound.smarthost, { host: 'relay.example', port: 587, tls: 'starttls', auth: { user: 'u', password: 'p' } });
    const bad = write('outbound:\n  smarthost:\n    host: relay.example\n    tls: none\n    auth: { user: u, password: p }\n');
    const { problems } = checkConfig(bad);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.path, 'outbound.smarthost.auth');
    assert.equal(problems[0]!.line, 5);
  });
});

describe('edge defences and plugins', () => {
  it('resolves the edge section, listener proxyProtocol and plugin paths', () => {
    fs.mkdirSync(path.join(dir, 'plugins'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'plugins', 'helo.ts'), 'export default {};');
    const c = loadConfig(write(`
listeners: [{ role: smtp, address: 127.0.0.1, port: 25, proxyProtocol: true }]
edge:
  dnsbl: { zones: [Zen.Example.Test.], cacheTtl: 10m }
  greylist: { enabled: true, delay: 300ms, expire: 2d, keep: 36d }
  rate: { connectionsPerMinute: 60, messagesPerHour: 1000 }
  proxyFrom: [10.0.0.0/8, "fd00::1"]
  proxyTimeout: 2s
plugins: [./plugins/helo.ts]
`));
    assert.deepEqual(c.listeners, [{ role: 'smtp', address: '127.0.0.1', port: 25, proxyProtocol: true }]);
    assert.deepEqual(c.edge, {
      dnsbl: { zones: ['zen.example.test'], cacheTtl: 600_000 },
      greylist: { enabled: true, delay: 300, expire: 172_800_000, keep: 3_110_400_000 },
      rate: { connectionsPerMinute: 60, messagesPerHour: 1000 },
      proxyFrom: ['10.0.0.0/8', 'fd00::1'],
      proxyTimeout: 2000,
    });
    assert.deepEqual(c.plugins, [path.join(dir, 'plugins', 'helo.ts')]);
  });

  it('reports bad edge values and plugins with their lines', () => {
    const problems = problemsOf(`listeners:
  - { role: smtp, address: 127.0.0.1, port: 25, proxyProtocol: true }
edge:
  dnsbl:
    zones: [bad_zone.test]
  greylist: { delay: 10m, expire: 5m }
  rate: { connectionsPerMinute: -1 }
  proxyFrom: [10.0.0.0/33]
  proxyTimeout: soon
  grey: {}
plugins: [./nowhere.ts]
`);
    const noProxies = problemsOf('listeners:\n  - { role: smtp, address: 127.0.0.1, port: 25, proxyProtocol: true }\n');
    assert.equal(problemAt(noProxies, 'listeners[0].proxyProtocol').line, 2);
    assert.match(problemAt(noProxies, 'listeners[0].proxyProtocol').message, /edge\.proxyFrom/);
    assert.equal(problemAt(problems, 'edge.dnsbl.zones[0]').line, 5);
    assert.match(problemAt(problems, 'edge.greylist.expire').message, /longer than edge\.greylist\.delay/);
    assert.equal(problemAt(problems, 'edge.rate.connectionsPerMinute').line, 7);
    assert.match(problemAt(problems, 'edge.proxyFrom[0]').message, /prefix length/);
    assert.equal(problemAt(problems, 'edge.proxyTimeout').line, 9);
    assert.match(problemAt(problems, 'edge.grey').message, /unknown key/);
    assert.match(problemAt(problems, 'plugins[0]').message, /cannot read .*nowhere\.ts/);
    assert.equal(problemAt(problems, 'plugins[0]').line, 11);
  });
});

describe('what would stop the server is found by config check (issue 11, break 8)', () => {
  const tlsConfig = (cert: string, key: string): ConfigProblem[] => problemsOf(`dataDir: ${path.join(dir, 'data-tls')}\ntls:\n  cert: ${cert}\n  key: ${key}\n`);

  it('a certificate that is not PEM', () => {
    const key = write(PAIR.key, 'good-key.pem');
    const text = write('this is not a certificate\n', 'text-cert.pem');
    const der = path.join(dir, 'cert.der');
    fs.writeFileSync(der, new crypto.X509Certificate(PAIR.cert).raw);
    for (const cert of [text, der]) {
      const p = problemAt(tlsConfig(cert, key), 'tls.cert');
      assert.equal(p.line, 3);
      assert.match(p.message, /is not a PEM certificate/);
      assert.ok(p.message.includes(cert), 'names the file');
    }
    // A PEM frame around garbage is caught by the parser.
    const broken = write('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', 'broken-cert.pem');
    assert.match(problemAt(tlsConfig(broken, key), 'tls.cert').message, /is not a valid certificate/);
  });

  it('a key that is not a key, one with a passphrase, and one that belongs to another certificate', () => {
    const cert = write(PAIR.cert, 'good-cert.pem');
    assert.match(problemAt(tlsConfig(cert, cert), 'tls.key').message, /is not a PEM private key/);
    const encrypted = crypto.createPrivateKey(PAIR.key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' });
    assert.match(problemAt(tlsConfig(cert, write(String(encrypted), 'encrypted-key.pem')), 'tls.key').message, /passphrase/);
    const other = write(OTHER.key, 'other-key.pem');
    const p = problemAt(tlsConfig(cert, other), 'tls.key');
    assert.equal(p.line, 4);
    assert.match(p.message, /is not the private key of the certificate in .*good-cert\.pem \(subject CN=mx\.tern\.test\)/);
    assert.deepEqual(tlsConfig(cert, write(PAIR.key, 'matching-key.pem')), [], 'the matching pair is fine');
  });

  it('an alias loop is refused at load, with the cycle', () => {
    const file = write(`domains:
  - name: tern.test
    mailboxes: [alice]
    aliases: { a: b, b: a, ok: alice }
`);
    const { problems } = checkConfig(file);
    assert.deepEqual(problems, [{ path: 'domains[0].aliases', line: 4, message: 'a -> b -> a is a loop: mail to it could never be delivered; point one of them at a mailbox' }]);
    assert.throws(() => loadConfig(file), ConfigError, 'serve loads with the same check, so no RCPT ever meets the loop');
  });

  it('a loop across domains and through plus-addressing; a catch-all into a loop', () => {
    const problems = problemsOf(`domains:
  - name: one.test
    mailboxes: [m]
    aliases: { x: y@two.test }
  - name: two.test
    mailboxes: '*'
    aliases: { y: z+tag, z: x@one.test }
  - name: three.test
    mailboxes: [p]
    catchAll: x@one.test
`);
    assert.deepEqual(problems.map((p) => [p.path, p.message]), [
      ['domains[0].aliases', 'x -> y@two.test -> z@two.test -> x is a loop: mail to it could never be delivered; point one of them at a mailbox'],
    ], 'one loop, reported once; the catch-all that leads into it adds no second report');
  });

  it('a catch-all at the end of a chain counts one level more', () => {
    const names = Array.from({ length: MAX_ALIAS_DEPTH }, (_, i) => `a${i}`);
    const aliases = names.map((a, i) => `${a}: ${names[i + 1] ?? 'alice'}`).join(', ');
    const problems = problemsOf(`domains:\n  - name: tern.test\n    mailboxes: [alice]\n    aliases: { ${aliases} }\n    catchAll: a0\n`);
    const p = problemAt(problems, 'domains[0].catchAll');
    assert.equal(p.line, 5);
    assert.match(p.message, new RegExp(`^catchAll of tern\\.test -> a0 -> .* expands ${MAX_ALIAS_DEPTH + 1} levels deep`));
  });

  it('a chain deeper than the expansion limit, reported once at its head; the limit itself is fine', () => {
    // aliases a0 -> a1 -> … -> a{n-1} -> alice: the Directory reaches alice at level n.
    const chain = (n: number): string => {
      const names = Array.from({ length: n }, (_, i) => `a${i}`);
      return names.map((a, i) => `${a}: ${names[i + 1] ?? 'alice'}`).join(', ');
    };
    const config = (n: number): string => `domains:\n  - name: tern.test\n    mailboxes: [alice]\n    aliases: { ${chain(n)} }\n`;
    const atLimit = checkConfig(write(config(MAX_ALIAS_DEPTH)));
    assert.deepEqual(atLimit.problems, []);
    const directory = new Directory(atLimit.config!.domains);
    assert.deepEqual(directory.resolve('a0', 'tern.test')!.map((t) => t.address), ['alice@tern.test'], 'what the loader accepts, the Directory resolves');

    const tooDeep = checkConfig(write(config(MAX_ALIAS_DEPTH + 1)));
    assert.equal(tooDeep.problems.length, 1, JSON.stringify(tooDeep.problems));
    const p = problemAt(tooDeep.problems, 'domains[0].aliases');
    assert.match(p.message, new RegExp(`^a0 -> a1 -> .* -> a${MAX_ALIAS_DEPTH} expands ${MAX_ALIAS_DEPTH + 1} levels deep, more than the ${MAX_ALIAS_DEPTH} allowed`));
    // The Directory would have refused it at RCPT time: that is what the check spares.
    const unchecked = checkConfig(write(config(MAX_ALIAS_DEPTH))).config!;
    unchecked.domains[0]!.aliases = Object.fromEntries(Array.from({ length: MAX_ALIAS_DEPTH + 1 }, (_, i) => [`a${i}`, [i === MAX_ALIAS_DEPTH ? 'alice' : `a${i + 1}`]]));
    assert.throws(() => new Directory(unchecked.domains).resolve('a0', 'tern.test'), /alias loop/);
  });

  it('a dataDir that cannot be created or written', () => {
    const file = write('x', 'a-regular-file');
    // Under a regular file: ENOTDIR, which stops root as well.
    const p = problemAt(problemsOf(`dataDir: ${file}/data\n`), 'dataDir');
    assert.equal(p.line, 1);
    assert.equal(p.message, `cannot create ${file}/data: ${file} is not a directory`);
    assert.equal(problemAt(problemsOf(`dataDir: ${file}\n`), 'dataDir').message, `${file} is not a directory`);
    // Missing but creatable: fine, and not created by the check.
    const later = path.join(dir, 'not-yet', 'data');
    assert.deepEqual(problemsOf(`dataDir: ${later}\n`), []);
    assert.equal(fs.existsSync(path.join(dir, 'not-yet')), false, 'config check creates nothing');
  });

  it('a dataDir without write permission (as a user permissions apply to)', { skip: process.getuid?.() === 0 ? 'root may write anywhere; covered by the ENOTDIR case' : false }, () => {
    const locked = path.join(dir, 'locked');
    fs.mkdirSync(locked, { mode: 0o500 });
    try {
      assert.match(problemAt(problemsOf(`dataDir: ${locked}/data\n`), 'dataDir').message, /is not writable: EACCES/);
    } finally {
      fs.chmodSync(locked, 0o700);
    }
  });
});
