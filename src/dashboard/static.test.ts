// The dashboard's front end as served: `/` and `/assets/*` with the CSP and
// the other headers of the interface, content types, revalidation, gzip,
// nothing outside the set; and the shipped front end itself: under its
// size budget, free of inline script and style (the CSP would block them)
// and of innerHTML (data is always text), type-checked against the DOM.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import Fastify, { type FastifyInstance } from 'fastify';
import { SECURITY_HEADERS, WEB_DIR, loadAssets, mountStatic } from './static.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
/** The budget for everything the browser loads. */
const BUDGET = 250 * 1024;

describe('dashboard static files', () => {
  let app: FastifyInstance;
  let base: string;

  before(async () => {
    app = Fastify();
    mountStatic(app);
    app.setNotFoundHandler((_req, reply) => reply.code(404).send({ status: 404 }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  });
  after(() => app?.close());

  it('serves index.html at / with the CSP, nosniff, no-referrer and revalidation', async () => {
    const res = await fetch(`${base}/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) assert.equal(res.headers.get(k), v, k);
    assert.equal(res.headers.get('content-security-policy'), "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'");
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.match(res.headers.get('etag') ?? '', /^"[\w-]+"$/);
    const html = await res.text();
    assert.match(html, /<script type="module" src="\/assets\/app\.js"><\/script>/);
  });

  it('serves the app and uPlot (from node_modules) under /assets/ with their types', async () => {
    const want: Record<string, string> = {
      '/assets/app.js': 'text/javascript; charset=utf-8',
      '/assets/app.css': 'text/css; charset=utf-8',
      '/assets/icon.svg': 'image/svg+xml',
      '/assets/uPlot.iife.min.js': 'text/javascript; charset=utf-8',
      '/assets/uPlot.min.css': 'text/css; charset=utf-8',
    };
    for (const [url, type] of Object.entries(want)) {
      const res = await fetch(base + url);
      assert.equal(res.status, 200, url);
      assert.equal(res.headers.get('content-type'), type, url);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', url);
      assert.ok((await res.arrayBuffer()).byteLength > 0, url);
    }
    const uplot = await (await fetch(`${base}/assets/uPlot.iife.min.js`)).text();
    assert.equal(uplot, fs.readFileSync(path.join(ROOT, 'node_modules/uplot/dist/uPlot.iife.min.js'), 'utf8'));
  });

  it('answers 304 to a matching If-None-Match, gzip to clients that take it', async () => {
    const first = await fetch(`${base}/assets/app.css`);
    const etag = first.headers.get('etag')!;
    const again = await fetch(`${base}/assets/app.css`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal(again.headers.get('etag'), etag);
    // fetch() asks for gzip and decodes it; the raw answer says what was sent.
    const raw = await new Promise<{ encoding: string | undefined; body: Buffer }>((resolve, reject) => {
      import('node:http').then(({ get }) =>
        get(`${base}/assets/app.css`, { headers: { 'accept-encoding': 'gzip;q=1, br;q=0.5' } }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve({ encoding: res.headers['content-encoding'], body: Buffer.concat(parts) }));
        }).on('error', reject),
      );
    });
    assert.equal(raw.encoding, 'gzip');
    assert.equal(zlib.gunzipSync(raw.body).toString(), fs.readFileSync(path.join(WEB_DIR, 'app.css'), 'utf8'));
    const plain = await new Promise<string | undefined>((resolve, reject) => {
      import('node:http').then(({ get }) =>
        get(`${base}/assets/app.css`, { headers: { 'accept-encoding': 'gzip;q=0' } }, (res) => {
          res.resume();
          resolve(res.headers['content-encoding']);
        }).on('error', reject),
      );
    });
    assert.equal(plain, undefined);
  });

  it('serves nothing else: unknown names and paths that climb out are 404', async () => {
    for (const url of ['/assets/nope.js', '/assets/../package.json', '/assets/%2e%2e/package.json', '/assets/', '/index.html', '/assets/index.html']) {
      const res = await fetch(base + url);
      assert.equal(res.status, 404, url);
    }
  });
});

describe('the shipped front end', () => {
  it(`is under ${BUDGET / 1024} KB gzipped, uPlot included`, (t) => {
    let raw = 0;
    let gz = 0;
    const lines: string[] = [];
    for (const a of loadAssets().values()) {
      const size = zlib.gzipSync(a.body, { level: 9 }).length;
      raw += a.body.length;
      gz += size;
      lines.push(`${a.url}: ${a.body.length} B, ${size} B gzipped`);
    }
    t.diagnostic(lines.join('; '));
    t.diagnostic(`front end in all: ${raw} B, ${gz} B gzipped (budget ${BUDGET} B)`);
    assert.ok(gz < BUDGET, `${gz} B gzipped`);
  });

  it('has no inline script or style (the CSP forbids them) and never builds HTML from strings', () => {
    const files = fs.readdirSync(WEB_DIR, { recursive: true }).map(String).filter((f) => /\.(html|js|css)$/.test(f));
    assert.ok(files.includes('index.html') && files.includes('app.js'));
    for (const f of files) {
      const text = fs.readFileSync(path.join(WEB_DIR, f), 'utf8');
      if (f.endsWith('.html')) {
        for (const tag of text.match(/<script\b[^>]*>/g) ?? []) assert.match(tag, /\ssrc="\/assets\//, `${f}: ${tag}`);
        assert.doesNotMatch(text, /<style\b/i, f);
        assert.doesNotMatch(text, /\sstyle=/i, f);
        assert.doesNotMatch(text, /\son[a-z]+=/i, `${f}: inline event handler`);
        assert.doesNotMatch(text, /(src|href)="(https?:)?\/\//i, `${f}: nothing from another origin`);
      }
      if (f.endsWith('.js')) {
        assert.doesNotMatch(text, /\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(/, f);
        assert.doesNotMatch(text, /setAttribute\(\s*['"]style['"]/, f);
        assert.doesNotMatch(text, /https?:\/\/(?!127\.)/, `${f}: no URL of another origin`);
      }
    }
  });

  it('type-checks against the DOM (JSDoc, test/browser/tsconfig.web.json)', { timeout: 60_000 }, () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'test/browser/tsconfig.web.json')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
