// The dashboard's front end (web/ in the package, and the vendored uPlot
// from node_modules), served by the `http` listener at `/` and `/assets/*`.
// Every file is read once, at start, and kept in memory with its gzip
// form and a strong ETag: the whole front end is a few tens of kilobytes,
// and nothing is ever looked up on disk by a name a client sent, so no
// path can reach outside the set below.
//
// No CDN and no runtime download: uPlot comes from the installed package,
// resolved as Node resolves an import. The pages carry a strict CSP (no
// inline script or style; web/ is written for it) and are revalidated on
// every load (`no-cache` + ETag), so an upgrade never mixes old and new
// modules.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** web/ in the checkout (src/dashboard/) and in the package (dist/dashboard/) alike. */
export const WEB_DIR = path.resolve(import.meta.dirname, '../../web');

/** The headers of every page and asset (the dashboard's interface). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Smaller than this, gzip costs more than it saves. */
const GZIP_MIN = 1024;

export interface Asset {
  /** Where it is served: `/` or `/assets/NAME`. */
  url: string;
  type: string;
  body: Buffer;
  gzip: Buffer | null;
  etag: string;
}

function asset(url: string, file: string): Asset {
  const body = fs.readFileSync(file);
  const type = TYPES[path.extname(file)];
  if (!type) throw new Error(`dashboard: no content type for ${file}`);
  const gz = body.length >= GZIP_MIN ? zlib.gzipSync(body, { level: 9 }) : null;
  const etag = `"${crypto.createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
  return { url, type, body, gzip: gz && gz.length < body.length ? gz : null, etag };
}

/**
 * Everything the front end is made of, by URL: web/index.html at `/`, the
 * other files of web/ (any depth, servable types only) under `/assets/`,
 * uPlot's script and style sheet as `/assets/uPlot.iife.min.js` and
 * `/assets/uPlot.min.css`.
 */
export function loadAssets(webDir = WEB_DIR): Map<string, Asset> {
  const out = new Map<string, Asset>();
  out.set('/', asset('/', path.join(webDir, 'index.html')));
  for (const entry of fs.readdirSync(webDir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const rel = path.relative(webDir, file).split(path.sep).join('/');
    if (rel === 'index.html' || !TYPES[path.extname(rel)]) continue;
    out.set(`/assets/${rel}`, asset(`/assets/${rel}`, file));
  }
  const require = createRequire(import.meta.url);
  const uplot = require.resolve('uplot/dist/uPlot.iife.min.js');
  out.set('/assets/uPlot.iife.min.js', asset('/assets/uPlot.iife.min.js', uplot));
  out.set('/assets/uPlot.min.css', asset('/assets/uPlot.min.css', path.join(path.dirname(uplot), 'uPlot.min.css')));
  return out;
}

/** Whether the client takes gzip (RFC 9110 §12.5.3; a q=0 refuses it). */
function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  for (const part of header.split(',')) {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding !== 'gzip' && coding !== '*') continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return !q || Number(q.slice(2)) > 0;
  }
  return false;
}

function send(a: Asset, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  reply.headers(SECURITY_HEADERS);
  reply.header('cache-control', 'no-cache');
  reply.header('etag', a.etag);
  reply.header('vary', 'accept-encoding');
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === a.etag)) return reply.code(304).send();
  reply.type(a.type);
  if (a.gzip && acceptsGzip(req.headers['accept-encoding'])) {
    reply.header('content-encoding', 'gzip');
    return reply.send(a.gzip);
  }
  return reply.send(a.body);
}

/** Serves `GET /` and `GET /assets/*` (HEAD too) from memory. */
export function mountStatic(app: FastifyInstance, assets: Map<string, Asset> = loadAssets()): void {
  const index = assets.get('/')!;
  app.get('/', async (req, reply) => send(index, req, reply));
  app.get('/assets/*', async (req, reply) => {
    const a = assets.get(`/assets/${(req.params as { '*': string })['*']}`);
    if (!a) return reply.callNotFound();
    return send(a, req, reply);
  });
}
