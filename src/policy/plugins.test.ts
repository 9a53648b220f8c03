import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPlugins } from './plugins.ts';
import { SmtpError } from '../smtp/reply.ts';
import { defaultConfig } from '../config/defaults.ts';
import { createResolver } from '../dns/resolver.ts';
import type { Logger } from '../util/log.ts';
import type { SessionInfo, Transaction } from './policy.ts';
import heloChecks from '../../examples/plugins/helo-checks.ts';
import attachments, { AttachmentScanner, param } from '../../examples/plugins/attachments.ts';
import type { DataMessage } from './data.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-plugins-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function plugin(source: string, ext = 'ts'): string {
  const file = path.join(dir, `p${n++}.${ext}`);
  fs.writeFileSync(file, source);
  return file;
}

const logged: { level: string; msg: string; fields?: Record<string, unknown> | undefined }[] = [];
const log: Logger = {
  debug: (msg, fields) => logged.push({ level: 'debug', msg, fields }),
  info: (msg, fields) => logged.push({ level: 'info', msg, fields }),
  warn: (msg, fields) => logged.push({ level: 'warn', msg, fields }),
  error: (msg, fields) => logged.push({ level: 'error', msg, fields }),
};
const config = { ...defaultConfig(), hostname: 'mx.tern.test' };
const ctx = { config, log, resolver: createResolver({ servers: ['127.0.0.1:9'], timeout: 100 }) };
const s: SessionInfo = { id: 'c1', remoteAddress: '192.0.2.1', remotePort: 1, localPort: 25, role: 'smtp', tls: false };
const t: Transaction = { from: null, params: { smtputf8: false }, recipients: [], rcptCount: 0, account: null, onAbandon() {} };

describe('loadPlugins', () => {
  it('a Check object and a factory, in order; the factory gets config, log, resolver and SmtpError', async () => {
    const a = plugin(`export default { name: 'a', helo(s, name) { if (name === 'bad') return 'accept'; } };`);
    const b = plugin(`
      export default async function ({ config, log, resolver, SmtpError }) {
        if (typeof resolver.a !== 'function') throw new Error('no resolver');
        log.info('made');
        return { name: 'b', mail() { throw new SmtpError(550, '5.7.1', 'No mail from ' + config.hostname); } };
      }`);
    const checks = await loadPlugins([a, b], ctx);
    assert.deepEqual(checks.map((c) => c.name), ['a', 'b']);
    assert.equal(await checks[0]!.helo!(s, 'bad'), 'accept');
    assert.equal(await checks[0]!.helo!(s, 'good'), undefined);
    assert.equal(checks[0]!.mail, undefined);
    await assert.rejects(async () => checks[1]!.mail!(s, null, { smtputf8: false }, t), (e: unknown) => e instanceof SmtpError && e.code === 550 && e.text === 'No mail from mx.tern.test');
    assert.ok(logged.some((l) => l.msg === 'made' && l.fields?.plugin === b), 'the plugin log names the file');
  });

  it('a crash or a wrong return value is a logged 451, never a rejection', async () => {
    const p = plugin(`export default { name: 'oops', rcpt() { throw new TypeError('boom'); }, mail() { return 'reject'; } };`);
    const [c] = await loadPlugins([p], ctx);
    for (const call of [() => c!.rcpt!(s, { local: 'a', domain: 'b.test', literal: false, utf8: false }, {}, null, t), () => c!.mail!(s, null, { smtputf8: false }, t)]) {
      await assert.rejects(async () => call(), (e: unknown) => e instanceof SmtpError && e.code === 451 && e.enhanced === '4.3.0');
    }
    assert.ok(logged.some((l) => l.level === 'error' && l.msg === 'plugin failed' && l.fields?.plugin === 'oops'));
  });

  it('an error shaped like SmtpError from another copy of the class still counts as the verdict', async () => {
    const p = plugin(`export default { name: 'duck', connect() { throw Object.assign(new Error('x'), { code: 554, enhanced: '5.7.1', text: 'Go away' }); } };`);
    const [c] = await loadPlugins([p], ctx);
    await assert.rejects(async () => c!.connect!(s), (e: unknown) => e instanceof SmtpError && e.code === 554 && e.enhanced === '5.7.1' && e.text === 'Go away');
  });

  it('data stage: body feeds and data verdicts pass through; a feed that throws makes the data stage 451, once logged', async () => {
    const p = plugin(`
      export default {
        name: 'bodyish',
        body(s, msg) { msg.seen = []; return (chunk) => { if (String(chunk) === 'boom') throw new Error('feed bug'); msg.seen.push(String(chunk)); }; },
        data(s, msg) { return msg.seen.length > 1 ? 'quarantine' : msg.seen.length === 1 ? 'accept' : 'reject'; },
      };`);
    const [c] = await loadPlugins([p], ctx);
    const message = (): DataMessage & { seen?: string[] } => ({}) as DataMessage;
    const run = async (pieces: string[]): Promise<unknown> => {
      const msg = message();
      const feed = c!.body!(s, msg, t);
      for (const piece of pieces) feed!(Buffer.from(piece));
      return c!.data!(s, msg, t);
    };
    assert.equal(await run(['a', 'b']), 'quarantine');
    assert.equal(await run(['a']), 'accept');
    const before = logged.filter((l) => l.msg === 'plugin failed').length;
    await assert.rejects(run(['a', 'boom', 'c', 'boom']), (e: unknown) => e instanceof SmtpError && e.code === 451 && e.enhanced === '4.3.0');
    assert.equal(logged.filter((l) => l.msg === 'plugin failed').length, before + 1, 'logged once, the feed stopped');
    await assert.rejects(run([]), (e: unknown) => e instanceof SmtpError && e.code === 451, "'reject' is not a verdict: a bug, 451");
  });

  it('unusable plugins stop the start with the file named', async () => {
    await assert.rejects(loadPlugins([plugin('export default 42;')], ctx), /p\d+\.ts: the default export must be a Check/);
    await assert.rejects(loadPlugins([plugin(`export default { helo() {} };`)], ctx), /needs a non-empty string "name"/);
    await assert.rejects(loadPlugins([plugin(`export default { name: 'x' };`)], ctx), /none of the hooks/);
    await assert.rejects(loadPlugins([plugin(`export default { name: 'x', rcpt: 1 };`)], ctx), /"rcpt" must be a function/);
    await assert.rejects(loadPlugins([plugin(`export default { name: 'x', data: 'yes' };`)], ctx), /"data" must be a function/);
    await assert.rejects(loadPlugins([plugin('export default {')], ctx), /cannot load/);
    await assert.rejects(loadPlugins([path.join(dir, 'missing.ts')], ctx), /missing\.ts: cannot load/);
  });
});

describe('examples/plugins/helo-checks.ts', () => {
  const check = heloChecks({ ...ctx, SmtpError, config: { ...config, listeners: [{ role: 'smtp', address: '192.0.2.25', port: 25 }] } });
  const refused = (e: unknown): boolean => e instanceof SmtpError && e.code === 550 && e.enhanced === '5.7.1';
  it('refuses a bare IP, our own name, our domains and our address as a literal', () => {
    for (const name of ['192.0.2.1', '2001:db8::1', 'mx.tern.test', 'MX.TERN.TEST.', 'localhost', '[192.0.2.25]']) {
      assert.throws(() => check.helo!(s, name), refused, name);
    }
  });
  it('accepts real names and literals, and leaves submission alone', () => {
    for (const name of ['client.example', '[192.0.2.1]', '[IPv6:2001:db8::1]']) check.helo!(s, name);
    check.helo!({ ...s, role: 'submission' }, '192.0.2.1');
    check.helo!({ ...s, remoteAddress: '192.0.2.25' }, '[192.0.2.25]'); // its own address: true
  });
});

describe('examples/plugins/attachments.ts', () => {
  const scan = (message: string, cuts: number[] = []): string[] => {
    const sc = new AttachmentScanner();
    const bytes = Buffer.from(message, 'latin1');
    let at = 0;
    for (const cut of [...cuts, bytes.length]) {
      sc.push(bytes.subarray(at, cut));
      at = cut;
    }
    return sc.end();
  };
  const MSG =
    'Subject: x\r\nContent-Type: multipart/mixed;\r\n\tboundary="b1"\r\n\r\npreamble\r\n' +
    '--b1\r\nContent-Type: text/plain\r\n\r\nContent-Type: x; name="in-text.exe"\r\n--b2\r\n' +
    '--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\nContent-Type: image/png;\r\n name="a.png"\r\n\r\nxx\r\n--b2--\r\n' +
    "--b1 \r\nContent-Disposition: attachment; filename*0*=utf-8''r%C3%A9; filename*1=\"sum\xc3\xa9.PDF\"\r\n\r\ndata\r\n--b1--\r\n";

  it('finds the file names of parts, nested multiparts and RFC 2231 forms, however the stream is cut', () => {
    const expected = ['a.png', 'résumé.PDF'];
    assert.deepEqual(scan(MSG), expected);
    for (let cut = 1; cut < MSG.length; cut += 7) assert.deepEqual(scan(MSG, [cut]), expected, `cut at ${cut}`);
  });

  it('param: quoted, token, continuation and extended values', () => {
    assert.equal(param('attachment; filename="a \\"b\\".txt"', 'filename'), 'a "b".txt');
    assert.equal(param('attachment; FILENAME=plain.txt; size=3', 'filename'), 'plain.txt');
    assert.equal(param("x; name*=iso-8859-1'en'%E9t%E9.doc", 'name'), '\ufffdt\ufffd.doc', 'only UTF-8 is decoded: others show as replacement characters');
    assert.equal(param('x; name*0="a"; name*1="b.exe"', 'name'), 'ab.exe');
    assert.equal(param('x; other=1', 'name'), undefined);
  });

  it('refuses executables, quarantines macro documents, tags the rest', async () => {
    const check = attachments({ ...ctx, SmtpError });
    const added: string[] = [];
    const message = (names: string[]): DataMessage => {
      const msg = { id: 'Q1', addHeader: (n: string, v: string) => added.push(`${n}: ${v}`) } as unknown as DataMessage;
      const feed = check.body!(s, msg, t)!;
      feed(Buffer.from('Content-Type: multipart/mixed; boundary=b\r\n\r\n' + names.map((n) => `--b\r\nContent-Disposition: attachment; filename="${n}"\r\n\r\nx\r\n`).join('') + '--b--\r\n'));
      return msg;
    };
    assert.throws(() => check.data!(s, message(['ok.pdf', 'run.EXE. ']), t), (e: unknown) => e instanceof SmtpError && e.code === 550 && /run\.EXE\. /.test(e.text));
    assert.equal(check.data!(s, message(['q.xlsm', 'b.pdf']), t), 'quarantine');
    assert.equal(check.data!(s, message(['b.pdf']), t), undefined);
    assert.equal(check.data!(s, message([]), t), undefined);
    assert.deepEqual(added, ['X-Attachments: q.xlsm, b.pdf', 'X-Attachments: b.pdf']);
  });
});
