// `npm run build` (and prepack): compiles src/ to JavaScript in dist/ for the
// npm package. Node strips TypeScript types only outside node_modules, so an
// installed copy needs plain JavaScript; the checkout runs src/ directly.
// dist/ is emptied first so a source file that was removed or renamed
// cannot ship as a stale module.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
// tsc's own entry run with this Node, not a `tsc` from PATH.
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
process.exitCode = r.status ?? 1;
