// Loading the one declarative config file.
//
// Three passes, each collecting every problem instead of stopping at the
// first, so one `tern config check` run shows everything to fix:
//   1. YAML syntax (yaml's parseDocument keeps node ranges for line numbers),
//   2. shape (ajv, with the JSON schema generated from the declaration in
//      schema.ts; `additionalProperties: false` everywhere so a misspelt key
//      is an error, not silently ignored),
//   3. meaning (ports, addresses, CIDRs, domain names, alias targets, durations,
//      readable TLS files), while the declaration resolves defaults, units and paths.
// Each problem names its key path and the 1-based line it is on.

import fs from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { LineCounter, isAlias, isMap, isNode, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { defaultConfig } from './defaults.ts';
import type { Seg } from './declare.ts';
import { CONFIG } from './schema.ts';
import type { TernConfig } from './types.ts';

export { parseDuration, parseSize } from './declare.ts';

export interface ConfigProblem {
  /** Key path, e.g. "limits.messageSize" or "listeners[1].port"; "" for the whole file. */
  path: string;
  /** 1-based line in the file, when known. */
  line?: number;
  message: string;
}

/** `FILE:LINE: path: message`, leaving out the parts that are unknown. */
export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}${p.line === undefined ? '' : `:${p.line}`}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`;
}

export class ConfigError extends Error {
  readonly file: string;
  readonly problems: ConfigProblem[];
  constructor(file: string, problems: ConfigProblem[]) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.problems = problems;
  }
}

/** The embedded defaults without a file; otherwise the file, or a ConfigError listing every problem. */
export function loadConfig(file?: string): TernConfig {
  if (file === undefined) return defaultConfig();
  const { config, problems } = checkConfig(file);
  if (config === undefined) throw new ConfigError(file, problems);
  return config;
}

/** Validates a file; `config` is set only when there are no problems. */
export function checkConfig(file: string): { config?: TernConfig; problems: ConfigProblem[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return { problems: [{ path: '', message: `cannot read file: ${(e as Error).message}` }] };
  }
  const lineCounter = new LineCounter();
  // prettyErrors off: we want the bare message, the line comes from the LineCounter.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    // The tree after a syntax error is a guess; checking its shape would only add noise.
    return { problems: doc.errors.map((e) => ({ path: '', line: lineCounter.linePos(e.pos[0]).line, message: e.message })) };
  }
  let raw: unknown;
  try {
    raw = doc.toJS() ?? {}; // an empty file means "all defaults"
  } catch (e) {
    return { problems: [{ path: '', message: (e as Error).message }] }; // e.g. an alias bomb
  }

  const problems: ConfigProblem[] = [];
  const report = (segs: Seg[], message: string): void => {
    problems.push({ path: formatPath(segs), line: lineOf(doc, lineCounter, segs), message });
  };
  if (!validate(raw)) {
    for (const e of validate.errors ?? []) {
      const segs = pointerToSegs(e.instancePath, raw);
      if (e.keyword === 'additionalProperties') segs.push(String(e.params.additionalProperty));
      if (e.keyword === 'required') segs.push(String(e.params.missingProperty));
      report(segs, schemaMessage(e));
    }
  }
  // Semantic checks run even after schema errors (a value of the wrong type
  // resolves to its default, unchecked), so all problems come out together.
  const ctx = { dir: path.dirname(path.resolve(file)), root: {}, report };
  const config: TernConfig = CONFIG.resolve(raw, [], ctx, {});
  config.source = path.resolve(file);
  problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  return problems.length > 0 ? { problems } : { config, problems };
}

const validate = new Ajv({ allErrors: true, allowUnionTypes: true, verbose: true, strict: true }).compile(CONFIG.schema);

const TYPE_NAMES: Record<string, string> = { string: 'a string', integer: 'an integer', number: 'a number', array: 'a list', object: 'a mapping', boolean: 'true or false' };

function describe(v: unknown): string {
  if (v === null) return 'empty';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number' && !Number.isInteger(v)) return `the number ${v}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

function schemaMessage(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties': {
      const known = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
      return `unknown key${known.length > 0 ? ` (expected one of: ${known.join(', ')})` : ''}`;
    }
    case 'required': return 'required key is missing';
    case 'type': return `must be ${[e.params.type].flat().map((t: string) => TYPE_NAMES[t] ?? t).join(' or ')}, not ${describe(e.data)}`;
    case 'enum': return `must be one of: ${(e.params.allowedValues as string[]).join(', ')}`;
    case 'minimum': return `must be at least ${e.params.limit}`;
    case 'minItems': return `must have at least ${e.params.limit} item${e.params.limit === 1 ? '' : 's'}`;
    case 'minLength': return 'must not be empty';
    default: return e.message ?? e.keyword;
  }
}

// ---------------------------------------------------------------------------
// Paths and lines

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** ajv's JSON pointer to our segments: numbers where the data is a list. */
function pointerToSegs(pointer: string, data: unknown): Seg[] {
  const segs: Seg[] = [];
  let cur = data;
  for (const part of pointer.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    const seg = Array.isArray(cur) ? Number(key) : key;
    segs.push(seg);
    cur = Array.isArray(cur) ? cur[seg as number] : isObject(cur) ? cur[key] : undefined;
  }
  return segs;
}

function formatPath(segs: Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_][\w-]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`; // e.g. an alias named "first.last"
  }
  return out;
}

/**
 * The line of the node at `segs`: the key's line for mapping entries (a block
 * value starts on the next line, but the key is what the user looks for), the
 * item's line in lists. Where the path does not exist (a missing key) the
 * deepest existing ancestor's line is used.
 */
function lineOf(doc: Document, lc: LineCounter, segs: Seg[]): number | undefined {
  const at = (n: unknown): number | undefined => (isNode(n) && n.range ? lc.linePos(n.range[0]).line : undefined);
  let node: unknown = doc.contents;
  let line = at(node);
  for (const seg of segs) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) break;
      line = at(pair.key) ?? at(pair.value) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
      node = node.items[seg];
      line = at(node) ?? line;
    } else break;
  }
  return line;
}

