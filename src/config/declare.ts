// The vocabulary the configuration is declared in (schema.ts). Each key is
// one value that carries everything about it, so nothing about a key is
// written twice:
//   - its shape in the file, as a JSON schema fragment for ajv,
//   - its resolved TypeScript type, inferred (`Resolved<typeof key>`),
//   - its default, in the file's own syntax ('5m', not 300000), resolved the
//     same way a value from the file is,
//   - its meaning checks (a CIDR, a domain name, a readable file),
//   - how a file value becomes the resolved one (units, paths, case).
// load.ts compiles the schema and resolves a file with it, types.ts names
// the inferred types, defaults.ts resolves an empty file, and the README
// test walks it.

/** A key path: names in mappings, indexes in lists. */
export type Seg = string | number;

export interface Ctx {
  /** The config file's directory: relative paths resolve against it. */
  readonly dir: string;
  /**
   * The top-level keys resolved so far, in declaration order: a default
   * or check that depends on another key (heloName on hostname) reads it
   * here, so that key must be declared earlier.
   */
  readonly root: Record<string, unknown>;
  /** Records a meaning problem; the file's shape was checked by ajv already. */
  readonly report: (at: Seg[], message: string) => void;
}

/** A default known only at load time (the host's name, the cwd), with what the README shows for it. */
export interface Computed<T> {
  readonly shown: string;
  /** Already resolved: a value computed here is not the user's to fix, so it is not checked… */
  readonly compute: (ctx: Ctx, parent: Record<string, unknown>) => T;
  /** …unless it is what the server would fail on too (the data directory). */
  readonly checked: boolean;
}

export function computed<T>(shown: string, compute: (ctx: Ctx, parent: Record<string, unknown>) => T, o: { checked?: boolean } = {}): Computed<T> {
  return { shown, compute, checked: o.checked ?? false };
}

const isComputed = (d: unknown): d is Computed<unknown> => typeof d === 'object' && d !== null && 'compute' in d && 'shown' in d;

export interface Key<T> {
  readonly kind: 'leaf' | 'section' | 'list' | 'record';
  /** The JSON schema fragment ajv checks the file's value against. */
  readonly schema: Record<string, unknown>;
  /** Listed in its section's `required`. */
  readonly required: boolean;
  /** The default as README's tables show it: file syntax, `none` for an optional key, `—` for a required one. */
  readonly shown: string;
  /** A section's keys. */
  readonly props?: Readonly<Record<string, Key<unknown>>>;
  /** A list's item, a record's value. */
  readonly item?: Key<unknown>;
  /** A record's key as README names it, e.g. `<domain>`. */
  readonly keyName?: string;
  /**
   * The resolved value of `v`, the file's value (undefined when absent).
   * A value of the wrong type was reported by the schema: it quietly takes
   * the default, so every meaning problem can still be found in one pass.
   */
  resolve(v: unknown, at: Seg[], ctx: Ctx, parent: Record<string, unknown>): T;
}

export type Resolved<K> = K extends Key<infer T> ? T : never;
type Props = Readonly<Record<string, Key<unknown>>>;
type Simplify<T> = { [K in keyof T]: T[K] } & {};
/** A section's resolved object: keys whose value may be undefined are optional (and left out when absent). */
export type SectionValue<P extends Props> = Simplify<
  { -readonly [K in keyof P as undefined extends Resolved<P[K]> ? never : K]: Resolved<P[K]> }
  & { -readonly [K in keyof P as undefined extends Resolved<P[K]> ? K : never]?: Resolved<P[K]> }
>;

/** A meaning check: a problem to report, or undefined. */
export type Check<T> = (v: T) => string | undefined;

// ---------------------------------------------------------------------------
// Leaves

interface LeafSpec<F, T> {
  schema: Record<string, unknown>;
  /** The file value has the type the schema asks for (anything else was reported already). */
  accepts: (v: unknown) => v is F;
  /** File value to resolved value, reporting what makes no sense. */
  convert: (v: F, at: Seg[], ctx: Ctx) => T;
  /** The resolved value's meaning check, also run on a literal default. */
  check?: ((v: T, at: Seg[], ctx: Ctx) => void) | undefined;
  default: F | Computed<T> | undefined;
  /** The resolved value of a required key that is missing (reported by the schema). */
  missing: T;
  required?: boolean | undefined;
  shown?: string | undefined;
}

function leaf<F, T>(s: LeafSpec<F, T>): Key<T> {
  const d = s.default;
  const shown = s.shown ?? (isComputed(d) ? d.shown : d !== undefined ? show(d) : s.required ? '—' : 'none');
  return {
    kind: 'leaf',
    schema: s.schema,
    required: s.required ?? false,
    shown,
    resolve(v, at, ctx, parent) {
      const checked = (x: T): T => {
        s.check?.(x, at, ctx);
        return x;
      };
      if (v !== undefined && s.accepts(v)) return checked(s.convert(v, at, ctx));
      if (isComputed(d)) return d.checked ? checked(d.compute(ctx, parent) as T) : d.compute(ctx, parent) as T;
      // A literal default is file syntax: resolved like a file value, so its meaning is checked by the same code (and the tests).
      return d === undefined ? s.missing : checked(s.convert(d as F, at, ctx));
    },
  };
}

/** A default as README writes it: `5m`, `true`, `[1m, 5m]`, `{}`. */
function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (typeof v === 'object' && v !== null) return Object.keys(v).length === 0 ? '{}' : JSON.stringify(v);
  return String(v);
}

/** Runs a Check and reports its problem. */
const reporting = <T>(check: Check<T> | undefined) => (check === undefined ? undefined : (v: T, at: Seg[], ctx: Ctx): void => {
  const problem = check(v);
  if (problem !== undefined) ctx.report(at, problem);
});

interface Common<D, T> {
  default?: D | Computed<T> | undefined;
  required?: boolean;
  /** README's default column, where the default is not a literal. */
  shown?: string;
}

export function int(o: Common<number, number> & { min?: number; max?: number; check?: Check<number> } = {}): Key<number> {
  return leaf({
    ...o,
    schema: { type: 'integer', ...(o.min === undefined ? {} : { minimum: o.min }), ...(o.max === undefined ? {} : { maximum: o.max }) },
    // Not an integer: reported by the schema.
    accepts: (v): v is number => Number.isInteger(v),
    convert: (v) => v,
    check: reporting(o.check),
    default: o.default,
    missing: 0,
  });
}

export function bool(d?: boolean, o: { shown?: string } = {}): Key<boolean> {
  return leaf({ ...o, schema: { type: 'boolean' }, accepts: (v): v is boolean => typeof v === 'boolean', convert: (v) => v, default: d, missing: false });
}

/** One of a fixed list of words; the list is the one place its values are named. */
export function oneOf<const V extends readonly string[]>(values: V, d?: V[number], o: { required?: boolean; shown?: string } = {}): Key<V[number]> {
  return leaf({
    ...o,
    schema: { enum: values },
    accepts: (v): v is V[number] => values.includes(v as string),
    convert: (v) => v,
    default: d,
    missing: values[0]!,
  });
}

export function str(o: Common<string, string> & {
  minLength?: number;
  pattern?: string;
  /** Normalizes the file's string (trim, case, path); the check sees the result. */
  map?: (s: string, ctx: Ctx) => string;
  check?: Check<string>;
} = {}): Key<string> {
  return leaf({
    ...o,
    schema: { type: 'string', ...(o.minLength === undefined ? {} : { minLength: o.minLength }), ...(o.pattern === undefined ? {} : { pattern: o.pattern }) },
    // Shorter than minLength (an empty string) was reported by the schema: it takes the default, unchecked.
    accepts: (v): v is string => typeof v === 'string' && v.length >= (o.minLength ?? 0),
    convert: (v, _at, ctx) => (o.map === undefined ? v : o.map(v, ctx)),
    check: reporting(o.check),
    default: o.default,
    missing: '',
  });
}

// ---------------------------------------------------------------------------
// Units: the file's durations and sizes, parsed here and nowhere else.

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * Milliseconds from `500ms`, `30s`, `5m`, `4h`, `5d`, `1w`, or combinations
 * such as `1h30m`; a bare number (or numeric string) means seconds.
 */
export function parseDuration(s: string | number): number {
  const bad = (): Error => new Error(`invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 30s, 5m, 4h, 5d, 1w; a bare number is seconds)`);
  if (typeof s === 'number') {
    if (!Number.isFinite(s) || s < 0) throw bad();
    return Math.round(s * 1000);
  }
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  let total = 0;
  let consumed = 0;
  // Sticky: tokens must follow each other with nothing in between.
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy)) {
    total += Number(m[1]) * (DURATION_UNITS[m[2]!] ?? NaN);
    consumed += m[0].length;
  }
  if (t === '' || consumed !== t.length || !Number.isFinite(total)) throw bad();
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Bytes from an integer or `512K`, `25M`, `1G` (binary multiples; `KB`, `KiB` also accepted). */
export function parseSize(s: string | number): number {
  const bad = (): Error => new Error(`invalid size ${JSON.stringify(s)} (use bytes or e.g. 512K, 25M, 1G)`);
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) throw bad();
    return s;
  }
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(s.trim());
  if (m === null) throw bad();
  const n = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(n)) throw bad();
  return n;
}

/** A duration in the file (`30s`, or a bare number of seconds), resolved to milliseconds. `min: 0` allows 0 (usually "off"). */
export function duration(d: string | number | undefined, o: { min?: 0 | 1 } = {}): Key<number> {
  const min = o.min ?? 1;
  const fallback = d === undefined ? 0 : parseDuration(d);
  return leaf({
    schema: { type: ['string', 'number'] },
    accepts: (v): v is string | number => typeof v === 'string' || typeof v === 'number',
    convert: (v, at, ctx) => {
      try {
        const ms = parseDuration(v);
        if (ms < min) ctx.report(at, 'must be longer than 0');
        return ms;
      } catch (e) {
        ctx.report(at, (e as Error).message);
        return fallback;
      }
    },
    default: d,
    missing: 0,
  });
}

/** A size in the file (bytes, or `25M`), resolved to bytes; at least 1. */
export function size(d: number): Key<number> {
  return leaf({
    schema: { type: ['integer', 'string'] },
    accepts: (v): v is string | number => typeof v === 'string' || typeof v === 'number',
    convert: (v, at, ctx) => {
      try {
        const bytes = parseSize(v);
        if (bytes < 1) ctx.report(at, 'must be at least 1 byte');
        return bytes;
      } catch (e) {
        ctx.report(at, (e as Error).message);
        return d;
      }
    },
    default: d,
    missing: d,
  });
}

/** A key whose value is a string or a list of strings (an alias's targets, a domain's mailboxes), resolved by `convert`. */
export function stringOrList<T>(o: Common<string | string[], T> & { minItems?: number; convert: (v: string | unknown[], at: Seg[], ctx: Ctx) => T; missing: T }): Key<T> {
  return leaf({
    ...o,
    schema: { type: ['string', 'array'], items: { type: 'string' }, ...(o.minItems === undefined ? {} : { minItems: o.minItems }) },
    accepts: (v): v is string | unknown[] => typeof v === 'string' || Array.isArray(v),
    default: o.default,
  });
}

// ---------------------------------------------------------------------------
// Composites

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A mapping with exactly these keys (`additionalProperties: false`, so a
 * misspelt key is an error, not silently ignored). `finish` sees the
 * resolved keys and may check them together or reshape them.
 */
// Overloads rather than a default type argument: without `finish`, R would be inferred from where the key is used (unknown).
export function section<P extends Props>(props: P): Key<SectionValue<P>>;
export function section<P extends Props, R>(props: P, o: { finish: (value: SectionValue<P>, at: Seg[], ctx: Ctx) => R }): Key<R>;
export function section<P extends Props, R>(
  props: P,
  o: { finish?: (value: SectionValue<P>, at: Seg[], ctx: Ctx) => R } = {},
): Key<R> {
  const required = Object.keys(props).filter((k) => props[k]!.required);
  return {
    kind: 'section',
    schema: { type: 'object', properties: Object.fromEntries(Object.entries(props).map(([k, p]) => [k, p.schema])), required, additionalProperties: false },
    required: false,
    shown: 'none',
    props,
    resolve(v, at, ctx) {
      const raw = isObject(v) ? v : {};
      // The top level fills ctx.root as it goes, for the keys that depend on earlier ones.
      const out: Record<string, unknown> = at.length === 0 ? ctx.root : {};
      for (const [k, p] of Object.entries(props)) {
        const value = p.resolve(raw[k], [...at, k], ctx, raw);
        if (value !== undefined) out[k] = value;
      }
      const value = out as SectionValue<P>;
      return o.finish === undefined ? (value as R) : o.finish(value, at, ctx);
    },
  };
}

/** The key may be absent, and then resolves to undefined (left out of its section). */
export function optional<T>(key: Key<T>, o: { shown?: string } = {}): Key<T | undefined> {
  return {
    ...key,
    required: false,
    shown: o.shown ?? (key.shown === '—' ? 'none' : key.shown),
    resolve: (v, at, ctx, parent) => (v === undefined ? undefined : key.resolve(v, at, ctx, parent)),
  };
}

/** `finish` sees every item resolved and may check them together or reshape them. */
export function list<T, R = T>(item: Key<T>, o: {
  /** In file syntax, resolved like the file's list; or computed (already resolved). */
  default?: readonly unknown[] | Computed<R[]>;
  minItems?: number;
  required?: boolean;
  shown?: string;
  finish?: (items: T[], at: Seg[], ctx: Ctx) => R[];
} = {}): Key<R[]> {
  const d = o.default ?? [];
  return {
    kind: 'list',
    schema: { type: 'array', items: item.schema, ...(o.minItems === undefined ? {} : { minItems: o.minItems }) },
    required: o.required ?? false,
    shown: o.shown ?? (isComputed(d) ? d.shown : show(d)),
    item,
    resolve(v, at, ctx, parent) {
      if (!Array.isArray(v) && isComputed(d)) return d.compute(ctx, parent);
      const items = (Array.isArray(v) ? v : d as readonly unknown[]).map((x, i) => item.resolve(x, [...at, i], ctx, parent));
      return o.finish === undefined ? (items as unknown as R[]) : o.finish(items, at, ctx);
    },
  };
}

/** A mapping from names the user chooses (`keyName` in README, e.g. `<domain>`) to values of one kind; keys as written. */
export function record<T>(value: Key<T>, o: { keyName: string; shown?: string }): Key<Record<string, T>> {
  return {
    kind: 'record',
    schema: { type: 'object', additionalProperties: value.schema },
    required: false,
    shown: o.shown ?? '{}',
    item: value,
    keyName: o.keyName,
    resolve(v, at, ctx) {
      const raw = isObject(v) ? v : {};
      // fromEntries defines own properties, so even a key named "__proto__" is safe.
      return Object.fromEntries(Object.entries(raw).map(([k, x]) => [k, value.resolve(x, [...at, k], ctx, raw)]));
    },
  };
}

/** Every key path of a declaration with its README default, lists as `name[]`, record keys as `<keyName>`. */
export function keyPaths(key: Key<unknown>, at = ''): { path: string; key: Key<unknown> }[] {
  const join = (name: string): string => (at === '' ? name : `${at}.${name}`);
  const here = at === '' ? [] : [{ path: at, key }];
  switch (key.kind) {
    case 'leaf': return here;
    case 'section': return [...here, ...Object.entries(key.props!).flatMap(([k, p]) => keyPaths(p, join(k)))];
    case 'list': return key.item!.kind === 'leaf' ? here : [...here, ...keyPaths(key.item!, `${at}[]`).slice(1)];
    // A record of sections is documented per entry: `inbound.domains.<domain>`.
    case 'record': return key.item!.kind === 'leaf' ? here : [{ path: join(key.keyName!), key }, ...keyPaths(key.item!, join(key.keyName!)).slice(1)];
  }
}
