// A data-stage plugin loaded from the config (docs/plugins.md, "The data
// stage"): examples/plugins/attachments.ts reads each message as it arrives
// and, before it is queued, refuses executable attachments (550 5.7.1),
// quarantines macro documents into Junk, and adds an X-Attachments field —
// against a real server, over SMTP, delivered to real Maildirs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { writeConfig, mailbox, waitFor, ROOT, type RawClient } from '../helpers/server.ts';
import { open, expectCmd, queuedIds, waitQueueEmpty } from './smtp-kit.ts';
import { loadConfig } from '../../src/config/load.ts';
import { startTern, type RunningTern } from '../../src/tern.ts';
import { silentLogger } from '../../src/util/log.ts';

/** A multipart/mixed message with one text part and attachments named by these raw parameter strings. */
function multipart(subject: string, dispositions: string[]): string {
  const b = `=_b_${subject.replace(/\W/g, '')}`;
  const parts = dispositions.map(
    (d) => `--${b}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n\t${d}\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n`,
  );
  return (
    `From: sender@client.test\r\nTo: bob@tern.test\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: multipart/mixed;\r\n boundary="${b}"\r\n\r\n` +
    `This is a MIME message.\r\n--${b}\r\nContent-Type: text/plain\r\n\r\n` +
    // A line that looks like a part header, in a text part: not an attachment.
    `See the file.\r\nContent-Disposition: attachment; filename="not-a-part.exe"\r\n` +
    parts.join('') +
    `--${b}--\r\n`
  );
}

/** DATA with `message` (dot-stuffed here); the reply to the final dot. */
async function send(c: RawClient, message: string): Promise<string> {
  await expectCmd(c, 'MAIL FROM:<sender@client.test>', /^250 /);
  await expectCmd(c, 'RCPT TO:<bob@tern.test>', /^250 /);
  await expectCmd(c, 'DATA', /^354 /);
  c.send(message.replace(/^\./gm, '..') + '.\r\n');
  return c.reply(10_000);
}

/** The delivered copy whose Subject is `subject`, from bob's inbox or one of his folders. */
async function delivered(dataDir: string, subject: string, folder = 'new'): Promise<string> {
  return waitFor(() => {
    for (const f of mailbox(dataDir, 'tern.test', 'bob', folder)) {
      const text = fs.readFileSync(f, 'latin1');
      if (text.includes(`\r\nSubject: ${subject}\r\n`)) return text;
    }
    return undefined;
  }, 10_000, `"${subject}" in ${folder}`) as Promise<string>;
}

describe('a data-stage plugin from the config (examples/plugins/attachments.ts)', () => {
  let tern: RunningTern;
  let dir: string;
  let dataDir: string;
  let c: RawClient;

  before(async () => {
    const cfg = writeConfig({ plugins: ['./plugins/attachments.ts'] });
    dir = cfg.dir;
    dataDir = cfg.dataDir;
    // Copied next to the config: the path is relative to the config file, and the example has no runtime imports from Tern.
    fs.mkdirSync(path.join(dir, 'plugins'));
    fs.copyFileSync(path.join(ROOT, 'examples/plugins/attachments.ts'), path.join(dir, 'plugins/attachments.ts'));
    tern = await startTern(loadConfig(cfg.file), { log: silentLogger });
    c = await open(tern.ports.find((p) => p.role === 'smtp')!.port);
  });
  after(async () => {
    c?.close();
    await tern?.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an executable attachment → 550 5.7.1 after the final dot, nothing queued; the session goes on', async () => {
    const queued = queuedIds(dataDir).length;
    // Folded, quoted, and in RFC 2231 form with a trailing dot: all still ".exe".
    assert.match(await send(c, multipart('exe', ['filename="invoice.exe"'])), /^550 5\.7\.1 Attachment "invoice\.exe" refused: executable files are not accepted here$/);
    assert.match(await send(c, multipart('exe2231', ["filename*=utf-8''r%C3%A9sum%C3%A9.pdf.exe."])), /^550 5\.7\.1 Attachment "r\?sum\?\.pdf\.exe\." refused/);
    assert.equal(queuedIds(dataDir).length, queued);
    await expectCmd(c, 'NOOP', /^250 2\.0\.0 /);
  });

  it('ordinary attachments are delivered with an X-Attachments field on top; the text part line is not one of them', async () => {
    const reply = await send(c, multipart('pdf', ['filename="report.pdf"', 'filename*0="pho"; filename*1="to.png"']));
    assert.match(reply, /^250 2\.0\.0 OK queued as /);
    const text = await delivered(dataDir, 'pdf');
    assert.match(text, /^(?:Return-Path: [^\r\n]*\r\n|Delivered-To: [^\r\n]*\r\n)*X-Attachments: report\.pdf, photo\.png\r\n/, 'prepended above the rest of the header');
    assert.doesNotMatch(text, /X-Attachments:[^\r\n]*not-a-part/);
  });

  it('a macro document goes to Junk (quarantine), still with its X-Attachments field', async () => {
    assert.match(await send(c, multipart('xlsm', ['filename="budget.xlsm"'])), /^250 2\.0\.0 OK queued as /);
    const text = await delivered(dataDir, 'xlsm', path.join('.Junk', 'new'));
    assert.match(text, /X-Attachments: budget\.xlsm\r\n/);
  });

  it('a message without attachments is delivered untouched', async () => {
    assert.match(await send(c, 'From: sender@client.test\r\nSubject: plain\r\n\r\nNo files.\r\n'), /^250 /);
    assert.doesNotMatch(await delivered(dataDir, 'plain'), /X-Attachments/);
    await waitQueueEmpty(dataDir);
    assert.equal(mailbox(dataDir, 'tern.test', 'bob', path.join('.Junk', 'new')).length, 1, 'only the macro document in Junk');
  });
});
