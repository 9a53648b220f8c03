// Interoperability: real, widely used SMTP clients against a real Tern on
// loopback — swaks (Perl, Net::SSLeay), Python's smtplib and nodemailer —
// over plain SMTP, STARTTLS (submission) and implicit TLS (submissions).
// Each test uses its own subject and finds its message by the queue id from
// the 250 reply, so tests share one server without sharing mailbox counts.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import nodemailer from 'nodemailer';
import { mailbox, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { ALICE } from '../helpers/server.ts';
import { requirePerlModule, requireTool } from '../helpers/tools.ts';

// Missing clients skip their tests with the package to install (a failure under CI).
const NEEDS_SWAKS = requireTool('swaks', 'swaks');
/** swaks only Recommends Net::SSLeay, but its TLS options need it. */
const NEEDS_SWAKS_TLS = NEEDS_SWAKS || requirePerlModule('Net::SSLeay', 'libnet-ssleay-perl');
const NEEDS_PYTHON = requireTool('python3', 'python3');

const PYTHON_CLIENT = path.join(import.meta.dirname, 'fixtures', 'smtplib_client.py');
const QUEUED = /250 2\.0\.0 OK queued as (\S+)/;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a program to completion (killed after `timeoutMs`), feeding `input` on stdin. */
function run(cmd: string, args: string[], input = '', timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

function uniqueSubject(name: string): string {
  return `${name} ${randomUUID()}`;
}

/** The delivered copies (file contents) of queue id `id` in user's Maildir. */
function copiesOf(srv: TestServer, user: string, id: string): string[] {
  return mailbox(srv.dataDir, 'tern.test', user)
    .filter((f) => path.basename(f).includes(`.T${id}R`))
    .map((f) => fs.readFileSync(f, 'utf8'));
}

/** Wait until queue id `id` reaches user's Maildir; returns that one copy. */
async function delivered(srv: TestServer, user: string, id: string): Promise<string> {
  await waitFor(() => copiesOf(srv, user, id).length > 0, 10_000, `${id} in ${user}'s Maildir`);
  return copiesOf(srv, user, id)[0]!;
}

/** All files in user's Maildir whose content includes `needle`. */
function withText(srv: TestServer, user: string, needle: string): string[] {
  return mailbox(srv.dataDir, 'tern.test', user)
    .map((f) => fs.readFileSync(f, 'utf8'))
    .filter((c) => c.includes(needle));
}

/** The message as the server wrote it: our Received header first, after Return-Path/Delivered-To. */
function receivedHeader(msg: string): string {
  const m = /^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*/m.exec(msg);
  assert.ok(m, `no Received header in:\n${msg}`);
  return m[0].replace(/\r\n[ \t]+/g, ' ');
}

function bodyOf(msg: string): string {
  const i = msg.indexOf('\r\n\r\n');
  assert.ok(i >= 0, 'no header/body separator');
  return msg.slice(i + 4);
}

function queueId(output: string): string {
  const m = QUEUED.exec(output);
  assert.ok(m, `no "250 2.0.0 OK queued as" in:\n${output}`);
  return m[1]!;
}

// ---------------------------------------------------------------- swaks

function swaks(srv: TestServer, role: 'smtp' | 'submission' | 'submissions', opts: { to: string; subject: string; body: string; tls?: 'starttls' | 'implicit' }): Promise<RunResult> {
  const args = [
    '--server', '127.0.0.1',
    '--port', String(srv.port(role)),
    '--helo', 'swaks.client.test',
    '--from', 'alice@tern.test',
    '--to', opts.to,
    '--header', `Subject: ${opts.subject}`,
    '--body', opts.body,
    '--timeout', '10',
  ];
  if (opts.tls === 'starttls') args.push('-tls');
  if (opts.tls === 'implicit') args.push('--tls-on-connect');
  // The submission ports need AUTH (RFC 6409 §4.3); swaks does PLAIN over the TLS it set up.
  if (role !== 'smtp') args.push('--auth', 'PLAIN', '--auth-user', ALICE.user, '--auth-password', ALICE.password);
  return run('swaks', args);
}

// ---------------------------------------------------------------- smtplib

interface PyRequest {
  security: 'plain' | 'starttls' | 'ssl';
  action?: 'sendmail' | 'pipeline';
  from?: string;
  to: string[];
  message: string;
  mail_options?: string[];
}

interface PyResult {
  ok: boolean;
  tls?: string | null;
  refused?: Record<string, [number, string]>;
  data?: [number, string] | null;
  replies?: [number, string][];
  error?: string;
  recipients?: Record<string, [number, string]>;
  code?: number;
  message?: string;
}

async function python(srv: TestServer, role: 'smtp' | 'submission' | 'submissions', req: PyRequest): Promise<PyResult> {
  const auth = role === 'smtp' ? undefined : [ALICE.user, ALICE.password];
  const full = { host: '127.0.0.1', port: srv.port(role), action: 'sendmail', from: 'alice@tern.test', auth, ...req };
  const r = await run('python3', [PYTHON_CLIENT], JSON.stringify(full));
  assert.equal(r.code, 0, `python client failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as PyResult;
}

function pyMessage(subject: string, body: string, from = 'alice@tern.test', to = 'alice@tern.test'): string {
  return `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${randomUUID()}@python.client.test>\r\n\r\n${body}`;
}

// ---------------------------------------------------------------- the tests

describe('interop with real SMTP clients', () => {
  let srv: TestServer;

  before(async () => {
    srv = await startServer();
  });

  after(async () => {
    await srv.stop();
  });

  describe('swaks', { skip: NEEDS_SWAKS }, () => {
    test('plain SMTP on the smtp port', async () => {
      const subject = uniqueSubject('swaks plain');
      // swaks turns each "\n" into CRLF and dot-stuffs the second line; the server must undo that.
      const r = await swaks(srv, 'smtp', { to: 'alice@tern.test', subject, body: 'Hello from swaks over plain SMTP.\n.A line that starts with a dot.\nLast line.' });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const id = queueId(r.stdout);
      const msg = await delivered(srv, 'alice', id);
      const received = receivedHeader(msg);
      assert.match(received, /^Received: from swaks\.client\.test \(\[127\.0\.0\.1\]\) by mx\.tern\.test \(Tern\) with ESMTP id /);
      assert.ok(received.includes(`id ${id}`), received);
      assert.ok(received.includes('for <alice@tern.test>'), received);
      assert.ok(!received.includes('using TLS'), received);
      assert.ok(msg.includes(`\r\nSubject: ${subject}\r\n`));
      assert.ok(bodyOf(msg).startsWith('Hello from swaks over plain SMTP.\r\n.A line that starts with a dot.\r\nLast line.\r\n'), bodyOf(msg));
      assert.ok(msg.startsWith('Return-Path: <alice@tern.test>\r\nDelivered-To: alice@tern.test\r\n'), msg);
    });

    test('STARTTLS on the submission port', { skip: NEEDS_SWAKS_TLS }, async () => {
      const subject = uniqueSubject('swaks starttls');
      const r = await swaks(srv, 'submission', { to: 'alice@tern.test', subject, body: 'Hello from swaks over STARTTLS.', tls: 'starttls' });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /<- {2}220 2\.0\.0 Ready to start TLS/);
      const id = queueId(r.stdout);
      const msg = await delivered(srv, 'alice', id);
      const received = receivedHeader(msg);
      assert.ok(received.includes(' with ESMTPSA id '), received);
      assert.ok(received.includes('(authenticated as alice@tern.test)'), received);
      assert.match(received, /\(using TLSv1\.[23] \S+\)/);
      assert.ok(bodyOf(msg).includes('Hello from swaks over STARTTLS.\r\n'));
    });

    test('implicit TLS on the submissions port', { skip: NEEDS_SWAKS_TLS }, async () => {
      const subject = uniqueSubject('swaks implicit tls');
      const r = await swaks(srv, 'submissions', { to: 'alice@tern.test', subject, body: 'Hello from swaks over implicit TLS.', tls: 'implicit' });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const id = queueId(r.stdout);
      const msg = await delivered(srv, 'alice', id);
      const received = receivedHeader(msg);
      assert.ok(received.includes(' with ESMTPSA id '), received);
      assert.match(received, /\(using TLSv1\.[23] \S+\)/);
      assert.ok(msg.includes(`\r\nSubject: ${subject}\r\n`));
      assert.ok(bodyOf(msg).includes('Hello from swaks over implicit TLS.\r\n'));
    });

    test('unknown user gets 550 5.1.1', async () => {
      const r = await swaks(srv, 'smtp', { to: 'nobody@tern.test', subject: uniqueSubject('swaks unknown'), body: 'x' });
      assert.notEqual(r.code, 0);
      assert.ok(r.stdout.includes('550 5.1.1'), r.stdout);
    });

    test('relay to a remote domain is denied with 554 5.7.1', async () => {
      const r = await swaks(srv, 'smtp', { to: 'someone@remote.test', subject: uniqueSubject('swaks relay'), body: 'x' });
      assert.notEqual(r.code, 0);
      assert.ok(r.stdout.includes('554 5.7.1'), r.stdout);
    });
  });

  describe('python smtplib', { skip: NEEDS_PYTHON }, () => {
    test('starttls() on the submission port', async () => {
      const subject = uniqueSubject('smtplib starttls');
      const body = 'Hello from smtplib.\r\n.A line that starts with a dot.\r\n';
      const r = await python(srv, 'submission', { security: 'starttls', to: ['alice@tern.test'], message: pyMessage(subject, body) });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.tls, 'TLSv1.3');
      assert.deepEqual(r.refused, {});
      const id = queueId(`${r.data![0]} ${r.data![1]}`);
      const msg = await delivered(srv, 'alice', id);
      const received = receivedHeader(msg);
      assert.match(received, /^Received: from python\.client\.test \(\[127\.0\.0\.1\]\) by mx\.tern\.test \(Tern\) with ESMTPSA id /);
      assert.ok(received.includes('(using TLSv1.3 '), received);
      assert.equal(bodyOf(msg), body);
    });

    test('SMTP_SSL on the submissions port', async () => {
      const subject = uniqueSubject('smtplib ssl');
      const body = 'Hello from SMTP_SSL.\r\n';
      const r = await python(srv, 'submissions', { security: 'ssl', to: ['alice@tern.test'], message: pyMessage(subject, body) });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.tls, 'TLSv1.3');
      const id = queueId(`${r.data![0]} ${r.data![1]}`);
      const msg = await delivered(srv, 'alice', id);
      assert.ok(receivedHeader(msg).includes(' with ESMTPSA id '));
      assert.equal(bodyOf(msg), body);
    });

    test('sendmail to alice and to the alias team: each mailbox gets it exactly once', async () => {
      const subject = uniqueSubject('smtplib alias');
      const r = await python(srv, 'smtp', {
        security: 'plain',
        to: ['alice@tern.test', 'team@tern.test'],
        message: pyMessage(subject, 'To alice and to the team.\r\n', 'alice@tern.test', 'alice@tern.test, team@tern.test'),
      });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.deepEqual(r.refused, {});
      const id = queueId(`${r.data![0]} ${r.data![1]}`);
      await delivered(srv, 'alice', id);
      await delivered(srv, 'bob', id);
      // Give a duplicate delivery, if there were to be one, time to show up.
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(withText(srv, 'alice', subject).length, 1, 'alice: exactly one copy');
      assert.equal(withText(srv, 'bob', subject).length, 1, 'bob: exactly one copy');
      // Two recipients: no "for <...>" clause that would disclose the other.
      assert.ok(!receivedHeader(copiesOf(srv, 'bob', id)[0]!).includes(' for <'));
    });

    test('pipelined MAIL, RCPT×3 and DATA in one write; the unknown recipient alone is refused', async () => {
      const subject = uniqueSubject('smtplib pipelined');
      const body = 'Pipelined.\r\n';
      const r = await python(srv, 'smtp', {
        security: 'plain',
        action: 'pipeline',
        to: ['alice@tern.test', 'nobody@tern.test', 'bob@tern.test'],
        message: pyMessage(subject, body),
      });
      assert.equal(r.ok, true, JSON.stringify(r));
      const codes = r.replies!.map(([c]) => c);
      assert.deepEqual(codes, [250, 250, 550, 250, 354], JSON.stringify(r.replies));
      assert.match(r.replies![2]![1], /^5\.1\.1 /);
      const id = queueId(`${r.data![0]} ${r.data![1]}`);
      assert.equal(bodyOf(await delivered(srv, 'alice', id)), body);
      assert.equal(bodyOf(await delivered(srv, 'bob', id)), body);
    });

    test('8-bit UTF-8 body with BODY=8BITMIME and an SMTPUTF8 sender, to a +tag address', async () => {
      const subject = uniqueSubject('smtplib utf8');
      const body = 'Grüße aus Köln! Ñandú, 東京, emoji 🐦.\r\nSecond line: ¿qué tal?\r\n';
      const from = 'ñandú@example.org';
      const r = await python(srv, 'smtp', {
        security: 'plain',
        from,
        to: ['alice+tag@tern.test'],
        message: `From: ${from}\r\nTo: alice+tag@tern.test\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${body}`,
        mail_options: ['SMTPUTF8', 'BODY=8BITMIME'],
      });
      assert.equal(r.ok, true, JSON.stringify(r));
      const id = queueId(`${r.data![0]} ${r.data![1]}`);
      const msg = await delivered(srv, 'alice', id);
      assert.equal(bodyOf(msg), body);
      assert.ok(msg.startsWith(`Return-Path: <${from}>\r\n`), msg.slice(0, 200));
      const received = receivedHeader(msg);
      assert.ok(received.includes(' with UTF8SMTP id '), received);
      assert.ok(received.includes('for <alice+tag@tern.test>'), received);
    });

    test('unknown user: SMTPRecipientsRefused with 550', async () => {
      const r = await python(srv, 'smtp', { security: 'plain', to: ['nobody@tern.test'], message: pyMessage(uniqueSubject('smtplib unknown'), 'x\r\n') });
      assert.equal(r.ok, false);
      assert.equal(r.error, 'SMTPRecipientsRefused');
      const [code, text] = r.recipients!['nobody@tern.test']!;
      assert.equal(code, 550);
      assert.match(text, /^5\.1\.1 /);
    });

    test('relay to a remote domain: SMTPRecipientsRefused with 554 5.7.1', async () => {
      const r = await python(srv, 'smtp', { security: 'starttls', to: ['someone@remote.test'], message: pyMessage(uniqueSubject('smtplib relay'), 'x\r\n') });
      assert.equal(r.ok, false);
      assert.equal(r.error, 'SMTPRecipientsRefused');
      const [code, text] = r.recipients!['someone@remote.test']!;
      assert.equal(code, 554);
      assert.match(text, /^5\.7\.1 /);
    });
  });

  describe('nodemailer', () => {
    // Not text, so nodemailer must base64 it; every byte value once.
    const attachment = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

    function transport(role: 'smtp' | 'submission' | 'submissions') {
      const auth = { user: ALICE.user, pass: ALICE.password };
      return nodemailer.createTransport(
        role === 'smtp'
          ? { host: '127.0.0.1', port: srv.port('smtp'), secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, name: 'nodemailer.client.test' }
          : role === 'submission'
            ? { host: '127.0.0.1', port: srv.port('submission'), secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, name: 'nodemailer.client.test', auth }
            : { host: '127.0.0.1', port: srv.port('submissions'), secure: true, tls: { rejectUnauthorized: false }, name: 'nodemailer.client.test', auth },
      );
    }

    /** The decoded content of the base64 part named `filename`. */
    function attachmentOf(msg: string, filename: string): Buffer {
      const boundary = /boundary="?([^";\r\n]+)"?/.exec(msg)?.[1];
      assert.ok(boundary, 'not a multipart message');
      const part = msg.split(`--${boundary}`).find((p) => p.includes(`filename=${filename}`) || p.includes(`filename="${filename}"`));
      assert.ok(part, `no part for ${filename}`);
      assert.match(part, /^Content-Transfer-Encoding: base64\r$/im);
      return Buffer.from(bodyOf(part).replace(/\s+/g, ''), 'base64');
    }

    for (const role of ['submission', 'submissions'] as const) {
      test(`${role === 'submission' ? 'STARTTLS (requireTLS)' : 'implicit TLS (secure)'} on the ${role} port, with an attachment`, async () => {
        const subject = uniqueSubject(`nodemailer ${role}`);
        const t = transport(role);
        try {
          const info = await t.sendMail({
            from: 'alice@tern.test',
            to: 'alice@tern.test',
            subject,
            text: 'See the attachment.',
            attachments: [{ filename: 'bytes.bin', content: attachment, contentType: 'application/octet-stream' }],
          });
          assert.deepEqual(info.accepted, ['alice@tern.test']);
          assert.deepEqual(info.rejected, []);
          const id = queueId(info.response);
          const msg = await delivered(srv, 'alice', id);
          const received = receivedHeader(msg);
          assert.match(received, /^Received: from nodemailer\.client\.test \(\[127\.0\.0\.1\]\) by mx\.tern\.test \(Tern\) with ESMTPSA id /);
          assert.ok(received.includes('(using TLSv1.3 '), received);
          assert.ok(msg.includes(`\r\nSubject: ${subject}\r\n`));
          assert.ok(msg.includes('See the attachment.'));
          assert.deepEqual(attachmentOf(msg, 'bytes.bin'), attachment);
        } finally {
          t.close();
        }
      });
    }

    test('unknown user: rejected with responseCode 550', async () => {
      const t = transport('submission');
      try {
        await assert.rejects(
          t.sendMail({ from: 'alice@tern.test', to: 'nobody@tern.test', subject: uniqueSubject('nodemailer unknown'), text: 'x' }),
          (e: Error & { responseCode?: number; response?: string }) => {
            assert.equal(e.responseCode, 550);
            assert.match(e.response ?? '', /^550 5\.1\.1 /);
            return true;
          },
        );
      } finally {
        t.close();
      }
    });

    test('relay to a remote domain from an unauthenticated client on port 25: rejected with responseCode 554 (5.7.1)', async () => {
      const t = transport('smtp');
      try {
        await assert.rejects(
          t.sendMail({ from: 'alice@tern.test', to: 'someone@remote.test', subject: uniqueSubject('nodemailer relay'), text: 'x' }),
          (e: Error & { responseCode?: number; response?: string }) => {
            assert.equal(e.responseCode, 554);
            assert.match(e.response ?? '', /^554 5\.7\.1 /);
            return true;
          },
        );
      } finally {
        t.close();
      }
    });
  });
});
