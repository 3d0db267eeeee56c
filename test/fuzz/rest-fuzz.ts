import fc from 'fast-check';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import querystring from 'fast-querystring';
import secureJsonParse from 'secure-json-parse';
import { badPercent, clip, hostileString, numericLooking, pctEncode, wtf8 } from './hostile.js';
import { KEY_DATASETS, KEY_SCOPE, type KeyRole, type World } from './server.js';
import { canSendWithNodeHttp, rawRequestBytes, type Answer, type HttpRequest } from './transport.js';

/**
 * REST fuzzing. The routes come from the live /openapi.json (plus the hidden operational routes),
 * so a new route is fuzzed without touching this file. Every request is a valid-looking template
 * of its route with one or more hostile mutations; for routes that change data at least one
 * mutation is fatal (it makes the request invalid under the API's contract), and the request's
 * expectation (must fail / must store nothing / anything but a crash) is derived from the final
 * request with the same parsers and JSON-schema rules the contract states.
 */

type Scope = 'read' | 'write' | 'admin';
const SCOPE_RANK: Record<Scope, number> = { read: 0, write: 1, admin: 2 };

// ---- operations ------------------------------------------------------------------------------

export interface Op {
  /** "POST /v1/datasets/{dataset}/items" */
  key: string;
  method: string;
  path: string;
  pathParams: string[];
  /** Query parameter schemas by name. */
  query: Record<string, unknown>;
  /** Schema of an application/json body. */
  jsonBody?: Record<string, unknown>;
  bodyRequired: boolean;
  multipart: boolean;
  secured: boolean;
  hidden: boolean;
}

/** Scopes the routes need (not part of the OpenAPI document). Unknown routes: GET is read; other methods unknown. */
const KNOWN_SCOPES: Record<string, Scope> = {
  'POST /v1/datasets': 'admin',
  'DELETE /v1/datasets/{dataset}': 'admin',
  'POST /v1/datasets/{dataset}/items': 'write',
  'DELETE /v1/datasets/{dataset}/items/{externalId}': 'write',
  'POST /v1/datasets/{dataset}/prototypes/refit': 'write',
  'POST /v1/datasets/{dataset}/duplicates/jobs': 'write',
  'POST /v1/datasets/{dataset}/score': 'read',
  'POST /v1/keys': 'admin',
  'GET /v1/keys': 'admin',
  'DELETE /v1/keys/{id}': 'admin',
  'GET /metrics': 'admin',
};
/** POST routes that only read. */
const READ_ONLY_POSTS = new Set(['POST /v1/datasets/{dataset}/score']);
const INGEST = 'POST /v1/datasets/{dataset}/items';

export function scopeOf(op: Op): Scope | null {
  return KNOWN_SCOPES[op.key] ?? (op.method === 'GET' ? 'read' : null);
}
export function changesData(op: Op): boolean {
  return op.method !== 'GET' && op.method !== 'HEAD' && !READ_ONLY_POSTS.has(op.key);
}

function deref(node: unknown, doc: Record<string, any>, depth = 0): any {
  if (depth > 40 || node === null || typeof node !== 'object') return node;
  if (Array.isArray(node)) return node.map((n) => deref(n, doc, depth + 1));
  const obj = node as Record<string, unknown>;
  if (typeof obj.$ref === 'string' && obj.$ref.startsWith('#/')) {
    const target = obj.$ref
      .slice(2)
      .split('/')
      .reduce<any>((at, part) => at?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
    return deref(target, doc, depth + 1);
  }
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, deref(v, doc, depth + 1)]));
}

/** Hidden routes (operations, dashboard, docs) that the document leaves out but the port serves. */
const HIDDEN_ROUTES: Array<Pick<Op, 'method' | 'path' | 'secured'>> = [
  { method: 'GET', path: '/metrics', secured: true },
  { method: 'GET', path: '/dashboard', secured: false },
  { method: 'GET', path: '/dashboard/assets/{file}', secured: false },
  { method: 'GET', path: '/docs/static/{file}', secured: false },
  { method: 'GET', path: '/docs/json', secured: false },
];

export function operationsOf(doc: Record<string, any>): Op[] {
  const ops: Op[] = [];
  const globalSecurity = (doc.security as unknown[] | undefined) ?? [];
  for (const [path, item] of Object.entries<Record<string, any>>(doc.paths ?? {})) {
    for (const [m, operation] of Object.entries<Record<string, any>>(item)) {
      const method = m.toUpperCase();
      if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) continue;
      const parameters = deref([...(item.parameters ?? []), ...(operation.parameters ?? [])], doc) as Array<Record<string, any>>;
      const content = deref(operation.requestBody?.content ?? {}, doc) as Record<string, { schema?: Record<string, unknown> }>;
      const security = (operation.security as unknown[] | undefined) ?? globalSecurity;
      ops.push({
        key: `${method} ${path}`,
        method,
        path,
        pathParams: [...path.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]),
        query: Object.fromEntries(parameters.filter((p) => p.in === 'query').map((p) => [p.name, p.schema ?? {}])),
        jsonBody: content['application/json']?.schema,
        bodyRequired: operation.requestBody?.required === true,
        multipart: 'multipart/form-data' in content,
        secured: security.length > 0,
        hidden: false,
      });
    }
  }
  const known = new Set(ops.map((o) => o.key));
  for (const h of HIDDEN_ROUTES) {
    const key = `${h.method} ${h.path}`;
    if (known.has(key)) continue;
    ops.push({ key, method: h.method, path: h.path, pathParams: [...h.path.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]), query: {}, bodyRequired: false, multipart: false, secured: h.secured, hidden: true });
  }
  return ops;
}

// ---- contract checks (the oracle) ------------------------------------------------------------

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
/** Bodies: the schema as written (no coercion), unknown properties dropped as fastify does. */
const bodyAjv = addFormats(new Ajv({ strict: false, coerceTypes: false, removeAdditional: true, useDefaults: true, allErrors: false }));
/** Query strings: text coerced to the declared types, as fastify does. */
const queryAjv = addFormats(new Ajv({ strict: false, coerceTypes: 'array', removeAdditional: true, useDefaults: true, allErrors: false }));
const compiled = new Map<object, ValidateFunction>();
function validator(ajv: Ajv, schema: object): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) compiled.set(schema, (v = ajv.compile(schema)));
  return v;
}

const QUERY_SCHEMAS = new Map<Op, object>();
function querySchema(op: Op): object {
  let s = QUERY_SCHEMAS.get(op);
  if (!s) QUERY_SCHEMAS.set(op, (s = { type: 'object', properties: op.query, additionalProperties: false }));
  return s;
}

const codePoints = (s: string) => [...s].length;

/** Would this ingest item be stored (true) or refused on its own (false)? Mirrors the documented item rules. */
function itemMightStore(item: unknown, dim: number, laterIds: Set<string>): boolean {
  if (item === null || typeof item !== 'object' || Array.isArray(item)) return false;
  const { externalId, embedding, image, metadata } = item as Record<string, unknown>;
  if (typeof externalId !== 'string' || externalId.length === 0 || codePoints(externalId) > 512) return false;
  if (laterIds.has(externalId)) return false; // an earlier duplicate fails; the last one is judged on its own
  if ((image === undefined) === (embedding === undefined)) return false;
  if (image !== undefined) return false; // both datasets are embedding-only: images are refused
  let values: ArrayLike<unknown>;
  if (typeof embedding === 'string') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(embedding) || embedding.length % 4 !== 0) return false;
    const bytes = Buffer.from(embedding, 'base64');
    if (bytes.length !== dim * 4) return false;
    values = Array.from({ length: dim }, (_, i) => bytes.readFloatLE(i * 4));
  } else if (Array.isArray(embedding)) values = embedding;
  else return false;
  if (values.length !== dim) return false;
  let squared = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v !== 'number') return false;
    const x = Math.fround(v);
    if (!Number.isFinite(x)) return false;
    squared += x * x;
  }
  if (!(squared > 0)) return false;
  if (metadata !== undefined && (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata))) return false;
  if (metadata !== undefined && Buffer.byteLength(JSON.stringify(metadata)) > 16 * 1024) return false;
  return true;
}

// ---- drafts and mutations --------------------------------------------------------------------

/** A path or query component and how it goes on the wire. */
interface Seg {
  text: string;
  /** pct: every non-unreserved byte of its WTF-8 form percent-encoded; literal: as written (ASCII/latin1); raw: its WTF-8 bytes unencoded. */
  mode: 'pct' | 'literal' | 'raw';
}

type Auth =
  | { kind: 'role'; role: KeyRole; scheme: string; pad: string }
  | { kind: 'none' }
  | { kind: 'value'; value: string }
  | { kind: 'dup'; first: Auth; second: Auth };

type Body =
  | { kind: 'none' }
  | { kind: 'json'; value: unknown; contentType: string | null; tokens: Map<string, string>; syntax: ((text: string) => string) | null; syntaxCls: string | null; rawSurrogates: boolean }
  | { kind: 'bytes'; bytes: Buffer; contentType: string | null; cls: string };

interface RawFraming {
  cls: string;
  /** HTTP/1.1 says the server must refuse it (otherwise a lenient server may read it). */
  fatal: boolean;
  build(req: HttpRequest): { bytes: Buffer; halfClose: boolean; allowNoResponse: boolean };
}

export interface Draft {
  op: Op;
  method: string;
  params: Record<string, Seg>;
  /** Names of path parameters replaced by something that names nothing stored. */
  poisoned: Set<string>;
  query: Array<{ k: Seg; v: Seg }>;
  auth: Auth;
  headers: Array<[string, string]>;
  body: Body;
  raw: RawFraming | null;
  /** A path change that leaves the route (trailing slash, dot segments, …). */
  pathBroken: string | null;
  classes: string[];
}

export interface Mutation {
  cls: string;
  apply(d: Draft): void;
}

export type Expectation = 'fail' | 'fail-or-store-nothing' | 'any';

export interface RestCase {
  route: string;
  method: string;
  request: HttpRequest;
  transport: 'http' | 'raw-tcp';
  raw?: { bytes: Buffer; halfClose: boolean; allowNoResponse: boolean };
  expect: Expectation;
  fatal: string[];
  classes: string[];
  summary: string;
}

function tokenFor(d: Draft & { body: Extract<Body, { kind: 'json' }> }, token: string): string {
  const marker = `\u0001TOKEN${d.body.tokens.size}\u0001`;
  d.body.tokens.set(marker, token);
  return marker;
}

/** Every location in a JSON value: [parent, key] pairs (the root has parent null). */
function locations(value: unknown, limit = 200): Array<{ parent: any; key: string | number | null; value: unknown }> {
  const out: Array<{ parent: any; key: string | number | null; value: unknown }> = [{ parent: null, key: null, value }];
  const walk = (v: unknown) => {
    if (out.length > limit || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      v.slice(0, 20).forEach((x, i) => {
        out.push({ parent: v, key: i, value: x });
        walk(x);
      });
    } else {
      for (const [k, x] of Object.entries(v)) {
        out.push({ parent: v, key: k, value: x });
        walk(x);
      }
    }
  };
  walk(value);
  return out;
}

function setAt(d: Draft, loc: { parent: any; key: string | number | null }, value: unknown): void {
  if (d.body.kind !== 'json') return;
  if (loc.parent === null) d.body.value = value;
  else loc.parent[loc.key as string] = value;
}

const clone = <T>(v: T): T => (v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T));

// ---- templates -------------------------------------------------------------------------------

interface Template {
  params: Record<string, string>;
  poisoned: string[];
  query: Array<[string, string]>;
  body: unknown;
}

const floats = (n: number) => fc.array(fc.double({ min: -1, max: 1, noNaN: true }).map((x) => Math.round(x * 1e4) / 1e4 || 0.5), { minLength: n, maxLength: n });

/** An ingest item that the contract says must be refused on its own (and, for some kinds, the whole request). */
function fatalItem(dim: number, world: World): fc.Arbitrary<Record<string, unknown>> {
  const id = fc.oneof(fc.constantFrom(...world.targetIds), hostileString.map((h) => h.value), fc.nat(9999).map((n) => `new-${n}`));
  const metadata = fc.option(
    fc.dictionary(
      fc.oneof(hostileString.map((h) => h.value), fc.string({ maxLength: 6 })),
      fc.oneof(hostileString.map((h) => h.value), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 })),
      { maxKeys: 3 },
    ),
    { nil: undefined },
  );
  const f32 = (values: number[]) => {
    const b = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => b.writeFloatLE(v, i * 4));
    return b.toString('base64');
  };
  const kinds: Array<fc.Arbitrary<[string, Record<string, unknown>]>> = [
    floats(dim - 1).map((e) => ['dim-short', { embedding: e }]),
    floats(dim + 1).map((e) => ['dim-long', { embedding: e }]),
    fc.constant(['empty-embedding', { embedding: [] }]),
    fc.tuple(floats(dim), fc.nat(dim - 1), fc.constantFrom(1e39, -1e39, 3.5e38, Number.MAX_VALUE)).map(([e, i, big]) => {
      e[i] = big;
      return ['float32-overflow', { embedding: e }];
    }),
    fc.constant(['zero-vector', { embedding: Array(dim).fill(0) }]),
    fc.constant(['bool-embedding', { embedding: Array.from({ length: dim }, (_, i) => i % 2 === 0) }]),
    fc.constant(['string-embedding-values', { embedding: Array.from({ length: dim }, (_, i) => String(i + 1)) }]),
    fc.constant(['null-embedding-values', { embedding: Array(dim).fill(null) }]),
    fc.constant(['nested-embedding', { embedding: Array.from({ length: dim }, () => [1]) }]),
    fc.constantFrom('!!!not base64!!!', 'AAAA====', '😀', 'AAA').map((s) => ['bad-base64', { embedding: s }]),
    fc.constantFrom(dim - 1, dim + 1, 0).map((n) => ['base64-wrong-length', { embedding: f32(Array(n).fill(0.5)) }]),
    fc.constant(['base64-nan', { embedding: f32(Array(dim).fill(Number.NaN)) }]),
    floats(dim).map((e) => ['both-image-embedding', { embedding: e, image: 'iVBORw0KGgo=' }]),
    fc.constant(['neither', {}]),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => ['garbage-image', { image: Buffer.from(b).toString('base64') }]),
    floats(dim).map((e) => ['metadata-array', { embedding: e, metadata: [1, 2] }]),
    floats(dim).map((e) => ['metadata-string', { embedding: e, metadata: 'x' }]),
    floats(dim).map((e) => ['metadata-too-big', { embedding: e, metadata: { blob: 'x'.repeat(17_000) } }]),
    floats(dim).map((e) => ['embedding-object', { embedding: Object.fromEntries(e.map((v, i) => [i, v])) }]),
  ];
  return fc.tuple(id, fc.oneof(...kinds), metadata).map(([externalId, [kind, rest], meta]) => {
    const item: Record<string, unknown> = { externalId, ...rest };
    if (meta !== undefined && !('metadata' in rest)) item.metadata = meta;
    if (kind === 'neither' || kind === 'garbage-image' || kind === 'both-image-embedding') item.metadata = meta;
    if (item.metadata === undefined) delete item.metadata;
    return item;
  });
}

function validCandidate(dim: number): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(fc.nat(999), floats(dim)).map(([n, embedding]) => ({ externalId: `cand-${n}`, embedding: embedding.map((x) => x || 0.25) }));
}

const policyArb = fc.option(
  fc.record(
    {
      order: fc.constantFrom('hardest', 'easiest', 'random', 'stratified'),
      fraction: fc.constantFrom(0.1, 0.3, 1),
      balance: fc.constantFrom('none', 'cluster'),
      seed: fc.integer({ min: 0, max: 100 }),
      epsilon: fc.constantFrom(0, 0.05, 2),
    },
    { requiredKeys: [] },
  ),
  { nil: undefined },
);

/** A schema-valid value for an unknown route's body (strings are plain ASCII, numbers inside their bounds). */
function fromSchema(schema: any, depth = 0): unknown {
  if (!schema || depth > 8) return null;
  if (schema.const !== undefined) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (Array.isArray(schema.anyOf)) return fromSchema(schema.anyOf[0], depth + 1);
  if (Array.isArray(schema.oneOf)) return fromSchema(schema.oneOf[0], depth + 1);
  if (Array.isArray(schema.allOf)) return Object.assign({}, ...schema.allOf.map((s: unknown) => fromSchema(s, depth + 1)));
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const name of schema.required ?? []) out[name] = fromSchema(schema.properties?.[name], depth + 1);
      return out;
    }
    case 'array':
      return Array.from({ length: schema.minItems ?? 1 }, () => fromSchema(schema.items, depth + 1));
    case 'integer':
    case 'number':
      return typeof schema.minimum === 'number' ? schema.minimum : 1;
    case 'boolean':
      return false;
    case 'string':
      return 'a'.repeat(Math.max(1, schema.minLength ?? 1));
    default:
      return null;
  }
}

function templateArb(op: Op, world: World): fc.Arbitrary<Template> {
  const dataset = fc.constantFrom(world.main.name, world.main.name, world.other.name);
  const params = (ds: string, extra: Record<string, string> = {}): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const p of op.pathParams) {
      if (p === 'dataset') out[p] = ds;
      else if (p === 'externalId') out[p] = extra.externalId ?? world.targetIds[0];
      else if (p === 'id') out[p] = extra.id ?? world.jobId;
      else if (p === 'file') out[p] = op.path.startsWith('/dashboard') ? 'main.js' : 'swagger-ui.css';
      else out[p] = extra[p] ?? 'x';
    }
    return out;
  };
  const t = (p: Record<string, string>, query: Array<[string, string]> = [], body: unknown = undefined, poisoned: string[] = []): Template => ({ params: p, poisoned, query, body });
  switch (op.key) {
    case 'POST /v1/datasets':
      return fc
        .record({ n: fc.nat(99_999), dimension: fc.constantFrom(4, 8, 16), k: fc.option(fc.constantFrom(2, 3), { nil: undefined }), settings: fc.option(fc.constant({ autoRefit: false, minItemsForFit: 50 }), { nil: undefined }) })
        .map(({ n, dimension, k, settings }) => t({}, [], { name: `fz-new-${n}`, dimension, ...(k ? { k } : {}), ...(settings ? { settings } : {}) }));
    case INGEST:
      return dataset.chain((ds) => {
        const dim = ds === world.other.name ? world.other.dim : world.main.dim;
        return fc.array(fatalItem(dim, world), { minLength: 1, maxLength: 3 }).map((items) => t(params(ds), [], { items }));
      });
    case 'POST /v1/datasets/{dataset}/score':
      return dataset.chain((ds) => {
        const dim = ds === world.other.name ? world.other.dim : world.main.dim;
        return fc
          .tuple(fc.array(fc.oneof(validCandidate(dim), fatalItem(dim, world)), { minLength: 1, maxLength: 3 }), policyArb)
          .map(([items, policy]) => t(params(ds), [], { items, ...(policy ? { policy } : {}) }));
      });
    case 'POST /v1/keys':
      return fc
        .record({ n: fc.nat(9999), scopes: fc.subarray(['read', 'write', 'admin'], { minLength: 1 }), datasets: fc.option(fc.constantFrom([], [world.main.name], [world.other.name]), { nil: undefined }) })
        .map(({ n, scopes, datasets }) => t({}, [], { name: `fz-key-${n}`, scopes, ...(datasets ? { datasets } : {}) }));
    case 'DELETE /v1/keys/{id}':
      // Never a stored key: an unknown UUID or a stored key's id with a changed last digit.
      return fc.uuid().map((id) => t(params('', { id }), [], undefined, ['id']));
    case 'GET /v1/datasets/{dataset}/selection':
      return fc
        .record({
          ds: dataset,
          order: fc.constantFrom('hardest', 'easiest', 'random', 'stratified'),
          size: fc.oneof(fc.constantFrom(['fraction', '0.5'] as [string, string], ['fraction', '1'] as [string, string]), fc.constantFrom(['count', '10'] as [string, string])),
          format: fc.constantFrom(null, 'json', 'ndjson', 'csv'),
          limit: fc.option(fc.constantFrom('5', '100'), { nil: undefined }),
        })
        .map(({ ds, order, size, format, limit }) => {
          const q: Array<[string, string]> = [['order', order], size];
          if (format) q.push(['format', format]);
          if (limit && format !== 'ndjson' && format !== 'csv') q.push(['limit', limit]);
          if (order === 'stratified') q.push(['bins', '10'], ['outlierFraction', '0.1']);
          return t(params(ds), q);
        });
    case 'GET /v1/datasets/{dataset}/duplicates':
      return fc
        .tuple(dataset, fc.constantFrom<Array<[string, string]>>([['epsilon', '0.05']], [['format', 'ndjson']], [['format', 'csv']], [['limit', '3']], [['cursor', 'x.1']], [['job', world.jobId]]))
        .map(([ds, q]) => t(params(ds), q));
    case 'GET /v1/jobs/{id}':
      return fc.constantFrom(world.jobId, world.otherJobId).map((id) => t(params('', { id })));
    default: {
      const itemRoute = op.pathParams.includes('externalId');
      return fc.tuple(dataset, fc.constantFrom(...world.targetIds)).map(([ds, externalId]) => {
        const p = params(itemRoute ? world.main.name : ds, { externalId });
        const unknownParams = op.pathParams.filter((n) => !['dataset', 'externalId', 'id', 'file'].includes(n));
        const isKeyId = op.pathParams.includes('id') && !op.path.startsWith('/v1/jobs');
        return t(p, [], op.jsonBody ? fromSchema(op.jsonBody) : undefined, [...unknownParams, ...(isKeyId ? ['id'] : [])]);
      });
    }
  }
}

// ---- mutation arbitraries --------------------------------------------------------------------

const m = (cls: string, apply: (d: Draft) => void): Mutation => ({ cls, apply });
const hex = (minLength: number, maxLength: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength, maxLength });

const GARBAGE_AUTH = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('Bearer pp_notarealkey000000000000000000', 'Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'Token abc', 'Bearer a b', '', 'Bearer pp_\u00e9\u00ff', 'Bearer\u00a0pp_x', 'Bearer %00', 'Bearer null') },
  { weight: 3, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 30 }).map((s) => `Bearer ${s.replace(/[^\t\x20-\x7e\x80-\xff]/g, 'x')}x`) },
  { weight: 1, arbitrary: fc.constantFrom(4000, 20_000).map((n) => `Bearer ${'k'.repeat(n)}`) },
  // Control characters and non-latin1 text: only raw TCP can send these, and Node's parser refuses most.
  { weight: 1, arbitrary: hostileString.map((h) => `Bearer ${h.value}`) },
);

function authMutation(op: Op): fc.Arbitrary<Mutation> {
  const roles = Object.keys(KEY_SCOPE) as KeyRole[];
  return fc.oneof(
    fc.constant(m('auth-missing', (d) => (d.auth = { kind: 'none' }))),
    GARBAGE_AUTH.map((value) => m(value.length > 3000 ? 'auth-huge' : 'auth-garbage', (d) => (d.auth = { kind: 'value', value }))),
    fc.constantFrom(...roles).map((role) => m(`key-${role}`, (d) => (d.auth = { kind: 'role', role, scheme: 'Bearer', pad: ' ' }))),
    fc.tuple(fc.constantFrom('bearer', 'BEARER', 'BeArEr'), fc.constantFrom(' ', '   ', '\t')).map(([scheme, pad]) => m('auth-scheme-case', (d) => {
      if (d.auth.kind === 'role') d.auth = { ...d.auth, scheme, pad };
      else d.auth = { kind: 'role', role: 'admin', scheme, pad };
    })),
    fc.tuple(GARBAGE_AUTH, fc.boolean()).map(([value, garbageFirst]) => m('auth-duplicated', (d) => {
      const good: Auth = d.auth.kind === 'role' ? d.auth : { kind: 'role', role: 'admin', scheme: 'Bearer', pad: ' ' };
      const bad: Auth = { kind: 'value', value };
      d.auth = garbageFirst ? { kind: 'dup', first: bad, second: good } : { kind: 'dup', first: good, second: bad };
    })),
  ).map((mut) => (op.secured ? mut : { ...mut, cls: `${mut.cls}(public)` }));
}

type PathPick = { seg: Seg; cls: string; poison: boolean };
const pathSegArb: fc.Arbitrary<PathPick> = fc.oneof(
  { weight: 5, arbitrary: hostileString.map((h): PathPick => ({ seg: { text: h.value, mode: 'pct' as const }, cls: `path-${h.cls}`, poison: true })) },
  { weight: 2, arbitrary: hostileString.map((h): PathPick => ({ seg: { text: h.value, mode: 'raw' as const }, cls: `path-raw-${h.cls}`, poison: true })) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('', 'fz-main'), badPercent).map(([a, p]): PathPick => ({ seg: { text: `${a}${p}`, mode: 'literal' as const }, cls: 'path-bad-percent', poison: true })) },
  { weight: 1, arbitrary: fc.constantFrom('fz-main\u00e9', '\u00ff\u00fe', 'caf\u00e9').map((text): PathPick => ({ seg: { text, mode: 'literal' as const }, cls: 'path-latin1-byte', poison: true })) },
  { weight: 2, arbitrary: fc.constantFrom(101, 129, 513, 600, 5000).map((n): PathPick => ({ seg: { text: 'q'.repeat(n), mode: 'pct' as const }, cls: `path-long-${n}`, poison: true })) },
  { weight: 2, arbitrary: hex(4, 8).map((h): PathPick => ({ seg: { text: `nope-${h}`, mode: 'pct' as const }, cls: 'path-unknown', poison: true })) },
  { weight: 1, arbitrary: fc.constantFrom('fz-main%2Fitems', '%2e%2e', '%00', 'fz-main%00').map((text): PathPick => ({ seg: { text, mode: 'literal' as const }, cls: 'path-encoded-special', poison: true })) },
  { weight: 1, arbitrary: fc.constant<PathPick>({ seg: { text: '', mode: 'pct' }, cls: 'path-empty', poison: true }) },
  { weight: 1, arbitrary: fc.constant<PathPick>({ seg: { text: 'fz%2Dmain', mode: 'literal' }, cls: 'path-pct-of-valid', poison: false }) },
);

function pathMutation(op: Op): fc.Arbitrary<Mutation> | null {
  const options: Array<{ weight: number; arbitrary: fc.Arbitrary<Mutation> }> = [];
  if (op.pathParams.length > 0) {
    options.push({ weight: 8, arbitrary:
      fc.tuple(fc.constantFrom(...op.pathParams), pathSegArb).map(([name, { seg, cls, poison }]) => m(cls, (d) => {
        d.params[name] = seg;
        if (poison) d.poisoned.add(name);
        else d.poisoned.delete(name);
      })) });
    if (op.pathParams.includes('dataset')) {
      options.push({ weight: 1, arbitrary: fc.constant(m('path-other-dataset', (d) => {
        d.params.dataset = { text: 'fz-other', mode: 'pct' };
        d.poisoned.delete('dataset');
      })) });
    }
  }
  options.push({ weight: 1, arbitrary:
    fc.constantFrom(['trailing-slash', (p: string) => `${p}/`], ['double-slash', (p: string) => p.replace('/', '//')], ['dot-segment', (p: string) => p.replace(/\/([^/]*)$/, '/./$1')], ['dotdot-segment', (p: string) => `${p}/../${p.split('/').pop()}`], ['upper-case-path', (p: string) => p.toUpperCase()]).map(([cls, f]) =>
      m(`path-${cls as string}`, (d) => (d.pathBroken = cls as string, d.classes.push(`rewrite:${(f as (p: string) => string)('/a/b')}`))),
    ) });
  return fc.oneof(...options);
}

function queryMutation(op: Op): fc.Arbitrary<Mutation> {
  const names = Object.keys(op.query);
  const value: fc.Arbitrary<{ seg: Seg; cls: string }> = fc.oneof(
    hostileString.map((h) => ({ seg: { text: h.value, mode: 'pct' as const }, cls: `query-${h.cls}` })),
    numericLooking.map((text) => ({ seg: { text, mode: 'pct' as const }, cls: 'query-numeric-looking' })),
    badPercent.map((text) => ({ seg: { text, mode: 'literal' as const }, cls: 'query-bad-percent' })),
    fc.constantFrom('-1', '0', '1.5', '1e39', '-1e39', '99999999999999999999', '2', '10001', '-0.1', 'true', '[]', '{}').map((text) => ({ seg: { text, mode: 'pct' as const }, cls: 'query-out-of-range' })),
    hostileString.map((h) => ({ seg: { text: h.value, mode: 'raw' as const }, cls: `query-raw-${h.cls}` })),
  );
  const options: Array<fc.Arbitrary<Mutation>> = [
    fc.tuple(hostileString, value).map(([k, v]) => m('query-unknown-param', (d) => d.query.push({ k: { text: k.value, mode: 'pct' }, v: v.seg }))),
    fc.constant(m('query-garbage-string', (d) => d.query.push({ k: { text: '&&=&=%%', mode: 'literal' }, v: { text: '', mode: 'literal' } }))),
  ];
  if (names.length > 0) {
    options.push(
      fc.tuple(fc.constantFrom(...names), value).map(([name, v]) => m(v.cls, (d) => {
        d.query = d.query.filter((q) => q.k.text !== name);
        d.query.push({ k: { text: name, mode: 'pct' }, v: v.seg });
      })),
      fc.tuple(fc.constantFrom(...names), value).map(([name, v]) => m('query-duplicated', (d) => {
        const existing = d.query.find((q) => q.k.text === name);
        d.query.push({ k: { text: name, mode: 'pct' }, v: existing && v.seg.text.length % 2 === 0 ? { ...existing.v } : v.seg });
      })),
    );
  }
  if (op.key === 'GET /v1/datasets/{dataset}/selection') {
    options.push(
      fc.oneof(fc.base64String({ minLength: 4, maxLength: 60 }), hostileString.map((h) => h.value), fc.constantFrom('eyJ2IjoxLCJvIjo1LCJoIjoieCJ9', 'null', '0', 'eyJ2Ijoi'))
        .map((cursor) => m('bad-cursor', (d) => {
          d.query = d.query.filter((q) => q.k.text !== 'cursor' && q.k.text !== 'format');
          d.query.push({ k: { text: 'cursor', mode: 'pct' }, v: { text: cursor, mode: 'pct' } }, { k: { text: 'format', mode: 'pct' }, v: { text: 'json', mode: 'pct' } });
        })),
      fc.constant(m('query-fraction-and-count', (d) => d.query.push({ k: { text: 'fraction', mode: 'pct' }, v: { text: '0.5', mode: 'pct' } }, { k: { text: 'count', mode: 'pct' }, v: { text: '3', mode: 'pct' } }))),
      fc.constant(m('query-no-size', (d) => (d.query = d.query.filter((q) => q.k.text !== 'fraction' && q.k.text !== 'count')))),
    );
  }
  if (op.key === INGEST) {
    options.push(fc.constantFrom('yes', '2', 'TRUE', '', '\u00e9').map((v) => m('query-bad-async', (d) => d.query.push({ k: { text: 'async', mode: 'pct' }, v: { text: v, mode: 'pct' } }))));
  }
  return fc.oneof(...options);
}

const WRONG_TYPES: unknown[] = [true, false, null, '8', 'abc', 0, 1.5, -1, {}, [], [true, false], { $gt: '' }, 1e39];

function jsonMutation(op: Op): fc.Arbitrary<Mutation> {
  const pick = fc.nat();
  const at = (d: Draft, n: number) => {
    if (d.body.kind !== 'json') return null;
    const locs = locations(d.body.value);
    return locs[n % locs.length];
  };
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(pick, fc.constantFrom(...WRONG_TYPES)).map(([n, v]) => m('wrong-type', (d) => {
      const loc = at(d, n);
      if (loc && typeof loc.value !== typeof v) setAt(d, loc, clone(v));
    })) },
    { weight: 3, arbitrary: fc.tuple(pick, fc.constantFrom(0, -1, 1e39, -1e39, 1e308, -1e308, 1.5, 1e-7, 2 ** 53 + 2, 16_001, 100_001, 4_294_967_296, -0, 129)).map(([n, v]) => m('out-of-range', (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => typeof l.value === 'number') : [];
      if (locs.length) setAt(d, locs[n % locs.length], v);
    })) },
    { weight: 2, arbitrary: fc.tuple(pick, fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e999', '-1e999', '0x10', '01', '.5', '+1', '1_000', 'undefined', 'true false')).map(([n, token]) => m(/e999/.test(token) ? 'number-overflow-literal' : 'invalid-json-token', (d) => {
      if (d.body.kind !== 'json') return;
      const locs = locations(d.body.value).filter((l) => l.parent !== null && (typeof l.value === 'number' || typeof l.value === 'boolean'));
      const all = locs.length ? locs : locations(d.body.value).filter((l) => l.parent !== null);
      if (all.length) setAt(d, all[n % all.length], tokenFor(d as Draft & { body: Extract<Body, { kind: 'json' }> }, token));
    })) },
    { weight: 4, arbitrary: fc.tuple(pick, hostileString).map(([n, h]) => m(`body-${h.cls}`, (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => typeof l.value === 'string') : [];
      if (locs.length) setAt(d, locs[n % locs.length], h.value);
    })) },
    { weight: 1, arbitrary: fc.tuple(pick, fc.constantFrom(129, 513, 600, 5000)).map(([n, len]) => m(`body-long-${len}`, (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => typeof l.value === 'string') : [];
      if (locs.length) setAt(d, locs[n % locs.length], 'z'.repeat(len));
    })) },
    { weight: 2, arbitrary: pick.map((n) => m('drop-field', (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => l.parent && !Array.isArray(l.parent)) : [];
      if (locs.length) {
        const loc = locs[n % locs.length];
        delete loc.parent[loc.key as string];
      }
    })) },
    { weight: 1, arbitrary: fc.tuple(pick, hostileString, fc.constantFrom<unknown>(1, 'x', null, { nested: true })).map(([n, k, v]) => m('extra-field', (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => l.value && typeof l.value === 'object' && !Array.isArray(l.value)) : [];
      if (locs.length) (locs[n % locs.length].value as Record<string, unknown>)[k.value] = v;
    })) },
    { weight: 1, arbitrary: pick.map((n) => m('empty-container', (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => l.value && typeof l.value === 'object') : [];
      if (locs.length) {
        const loc = locs[n % locs.length];
        setAt(d, loc, Array.isArray(loc.value) ? [] : {});
      }
    })) },
    { weight: 1, arbitrary: fc.constantFrom(1001, 2000).map((count) => m(`huge-array-${count}`, (d) => {
      const locs = d.body.kind === 'json' ? locations(d.body.value).filter((l) => Array.isArray(l.value) && (l.value as unknown[]).length > 0) : [];
      if (locs.length) {
        const arr = locs[0].value as unknown[];
        setAt(d, locs[0], Array.from({ length: count }, (_, i) => clone(arr[i % arr.length])));
      }
    })) },
    { weight: 1, arbitrary: fc.constantFrom('{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}').map((text) => m('proto-pollution', (d) => {
      if (d.body.kind === 'json') {
        const extra = JSON.parse(text) as Record<string, unknown>;
        if (d.body.value && typeof d.body.value === 'object' && !Array.isArray(d.body.value)) Object.assign(d.body.value, extra);
        else d.body.value = extra;
        if ('__proto__' in extra && Object.getPrototypeOf(d.body.value) === Object.prototype) {
          // Object.assign cannot copy an own __proto__ key: write it as text instead.
          d.body.syntax = (t) => t.replace(/^\{/, '{"__proto__":{"polluted":1},');
          d.body.syntaxCls = 'proto-pollution';
        }
      }
    })) },
    { weight: 1, arbitrary: fc.constant(m('raw-lone-surrogate-bytes', (d) => {
      if (d.body.kind === 'json') d.body.rawSurrogates = true;
    })) },
    { weight: 3, arbitrary: fc.oneof(
      fc.double({ min: 0.05, max: 0.95, noNaN: true }).map((f) => ['truncated-json', (t: string) => t.slice(0, Math.max(1, Math.floor(t.length * f)))] as const),
      fc.constantFrom(
        ['trailing-garbage', (t: string) => `${t}}}`] as const,
        ['single-quotes', (t: string) => t.replace(/"/g, "'")] as const,
        ['json-comment', (t: string) => `/* c */${t}`] as const,
        ['bom-prefix', (t: string) => `\ufeff${t}`] as const,
        ['empty-body', (_t: string) => ''] as const,
        ['whitespace-body', (_t: string) => ' \n\t '] as const,
        ['null-body', (_t: string) => 'null'] as const,
        ['array-body', (t: string) => `[${t}]`] as const,
        ['deep-nesting', (_t: string) => `${'['.repeat(5000)}${']'.repeat(5000)}`] as const,
        ['duplicate-keys', (t: string) => t.replace(/^\{/, '{"items":5,"name":5,')] as const,
        ['nul-in-json', (t: string) => t.replace(/"/, '"\u0000')] as const,
        ['utf16-body', (t: string) => Buffer.from(t, 'utf16le').toString('latin1')] as const,
        ['bad-escape', (t: string) => t.replace(/":"/, '":"\\uZZZZ\\x41')] as const,
        ['escaped-nul-and-surrogates', (t: string) => t.replace(/":"/, '":"\\u0000\\ud800\\udfff')] as const,
        ['huge-number-literal', (t: string) => t.replace(/:(-?\d+(\.\d+)?)/, `:${'9'.repeat(400)}`)] as const,
        ['whitespace-padding-100k', (t: string) => `${' '.repeat(100_000)}${t}`] as const,
      ),
    ).map(([cls, f]) => m(cls, (d) => {
      if (d.body.kind === 'json') {
        d.body.syntax = f;
        d.body.syntaxCls = cls;
      }
    })) },
  );
}

const multipartMutation: fc.Arbitrary<Mutation> = fc
  .tuple(
    fc.constantFrom(
      'no-boundary', 'long-boundary-300', 'long-boundary-1000', 'truncated', 'bad-part-header', 'no-disposition', 'boundary-mismatch', 'only-metadata',
      'bad-metadata-json', 'metadata-not-object', 'unknown-field', 'empty-multipart', 'hostile-field-names', 'well-formed-garbage-image', 'many-fields',
      'quoted-boundary-unterminated', 'boundary-with-space', 'rfc5987-filename', 'bad-rfc5987-filename', 'too-many-files', 'preamble-and-epilogue',
      'base64-transfer-encoding', 'huge-part-header', 'missing-crlf-after-boundary', 'nested-multipart-mixed', 'duplicate-boundary-param', 'file-without-name',
    ),
    hostileString,
    fc.uint8Array({ minLength: 0, maxLength: 64 }),
  )
  .map(([kind, h, bytes]) => m(`multipart-${kind}`, (d) => {
    let boundary = 'fzb0undary';
    if (kind === 'long-boundary-300') boundary = 'b'.repeat(300);
    if (kind === 'long-boundary-1000') boundary = 'b'.repeat(1000);
    const crlf = '\r\n';
    const file = (name: string, filename: string) =>
      Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="${name}"; filename="${filename}"${crlf}Content-Type: image/png${crlf}${crlf}`, 'utf8'), Buffer.from(bytes), Buffer.from(crlf)]);
    const field = (name: string, value: string) => Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="${name}"${crlf}${crlf}${value}${crlf}`, 'utf8');
    const end = Buffer.from(`--${boundary}--${crlf}`);
    let body: Buffer;
    let contentType = `multipart/form-data; boundary=${boundary}`;
    switch (kind) {
      case 'no-boundary':
        body = Buffer.concat([file('item-0000', 'a.png'), end]);
        contentType = 'multipart/form-data';
        break;
      case 'truncated':
        body = Buffer.concat([file('item-0000', 'a.png'), end]).subarray(0, 30 + (bytes.length % 20));
        break;
      case 'bad-part-header':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Garbage header without colon${crlf}\u0000\u00ff${crlf}${crlf}data${crlf}`, 'latin1'), end]);
        break;
      case 'no-disposition':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Type: image/png${crlf}${crlf}xx${crlf}`), end]);
        break;
      case 'boundary-mismatch':
        body = Buffer.concat([file('item-0000', 'a.png'), end]);
        contentType = 'multipart/form-data; boundary=other';
        break;
      case 'only-metadata':
        body = Buffer.concat([field('metadata', '{}'), end]);
        break;
      case 'bad-metadata-json':
        body = Buffer.concat([file('item-0000', 'a.png'), field('metadata', h.value), end]);
        break;
      case 'unknown-field':
        body = Buffer.concat([field(h.value.replace(/"/g, ''), 'x'), end]);
        break;
      case 'empty-multipart':
        body = Buffer.alloc(0);
        break;
      case 'hostile-field-names':
        body = Buffer.concat([file(h.value, h.value), file('file', `${h.value}.png`), end]);
        break;
      case 'many-fields':
        body = Buffer.concat([...Array.from({ length: 40 }, (_, i) => field(`f${i}`, 'x')), end]);
        break;
      case 'metadata-not-object':
        body = Buffer.concat([file('item-0000', 'a.png'), field('metadata', ['[1,2]', '"x"', 'null', '7'][bytes.length % 4]), end]);
        break;
      case 'rfc5987-filename':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="file"; filename*=UTF-8''%F0%9F%92%A5${pctEncode(wtf8(h.value))}${crlf}${crlf}`, 'latin1'), Buffer.from(bytes), Buffer.from(crlf), end]);
        break;
      case 'bad-rfc5987-filename':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="file"; filename*=UTF-8''%ZZ%E0%A4${crlf}${crlf}`, 'latin1'), Buffer.from(bytes), Buffer.from(crlf), end]);
        break;
      case 'too-many-files':
        body = Buffer.concat([...Array.from({ length: 1002 }, (_, i) => file(`f-${i}`, `${i}.png`)), end]);
        break;
      case 'preamble-and-epilogue':
        body = Buffer.concat([Buffer.from(`preamble ${h.value}${crlf}`, 'utf8'), file('item-0000', 'a.png'), end, Buffer.from(`epilogue \u0000 ${h.value}`, 'utf8')]);
        break;
      case 'base64-transfer-encoding':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="item-0000"; filename="a.png"${crlf}Content-Transfer-Encoding: base64${crlf}${crlf}!!notbase64!!${crlf}`), end]);
        break;
      case 'huge-part-header':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="item-0000"; filename="a.png"${crlf}X-Big: ${'h'.repeat(90_000)}${crlf}${crlf}`), Buffer.from(bytes), Buffer.from(crlf), end]);
        break;
      case 'missing-crlf-after-boundary':
        body = Buffer.concat([Buffer.from(`--${boundary}Content-Disposition: form-data; name="item-0000"${crlf}${crlf}x${crlf}`), end]);
        break;
      case 'nested-multipart-mixed':
        body = Buffer.concat([
          Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; name="files"${crlf}Content-Type: multipart/mixed; boundary=inner${crlf}${crlf}--inner${crlf}Content-Disposition: file; filename="x.png"${crlf}${crlf}`),
          Buffer.from(bytes),
          Buffer.from(`${crlf}--inner--${crlf}${crlf}`),
          end,
        ]);
        break;
      case 'duplicate-boundary-param':
        body = Buffer.concat([file('item-0000', 'a.png'), end]);
        contentType = `multipart/form-data; boundary=${boundary}; boundary=other`;
        break;
      case 'file-without-name':
        body = Buffer.concat([Buffer.from(`--${boundary}${crlf}Content-Disposition: form-data; filename="a.png"${crlf}${crlf}`), Buffer.from(bytes), Buffer.from(crlf), end]);
        break;
      case 'quoted-boundary-unterminated':
        body = Buffer.concat([file('item-0000', 'a.png'), end]);
        contentType = `multipart/form-data; boundary="${boundary}`;
        break;
      case 'boundary-with-space':
        body = Buffer.concat([file('item-0000', 'a.png'), end]);
        contentType = `multipart/form-data; boundary = ${boundary}`;
        break;
      default:
        body = Buffer.concat([file('item-0000', 'a.png'), file('file', 'b.png'), end]);
    }
    d.body = { kind: 'bytes', bytes: body, contentType, cls: `multipart-${kind}` };
  }));

const contentTypeMutation: fc.Arbitrary<Mutation> = fc
  .constantFrom<[string, string | null]>(
    ['text/plain', 'text/plain'],
    ['xml', 'application/xml'],
    ['no-content-type', null],
    ['form-urlencoded', 'application/x-www-form-urlencoded'],
    ['octet-stream', 'application/octet-stream'],
    ['json-suffix', 'application/problem+json'],
    ['json-charset-utf16', 'application/json; charset=utf-16'],
    ['json-upper', 'APPLICATION/JSON'],
    ['garbage-content-type', ';;;=='],
    ['json-params-garbage', 'application/json; ;;; x'],
    ['content-type-nonascii', 'application/json; x=\u00e9'],
  )
  .map(([cls, ct]) => m(`content-type-${cls}`, (d) => {
    if (d.body.kind === 'json') d.body.contentType = ct;
    else if (d.body.kind === 'bytes') d.body.contentType = ct;
    else d.body = { kind: 'bytes', bytes: Buffer.from('<a>1</a>'), contentType: ct, cls: `content-type-${cls}` };
  }));

const TOKEN_METHODS = ['PUT', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH', 'LINK', 'GET', 'POST', 'DELETE'];

function methodMutation(op: Op, methodsOnPath: Set<string>): fc.Arbitrary<Mutation> {
  const wrong = TOKEN_METHODS.filter((x) => !methodsOnPath.has(x) && !(x === 'HEAD' && methodsOnPath.has('GET')));
  const options: Array<{ weight: number; arbitrary: fc.Arbitrary<Mutation> }> = [{ weight: 1, arbitrary: fc.constantFrom('FOO', 'get', 'G\u00c9T', 'BREW').map((x) => m('method-unknown', (d) => (d.method = x))) }];
  if (wrong.length) options.push({ weight: 3, arbitrary: fc.constantFrom(...wrong).map((x) => m('method-wrong', (d) => (d.method = x))) });
  if (op.method === 'GET') options.push({ weight: 1, arbitrary: fc.constant(m('method-head', (d) => (d.method = 'HEAD'))) });
  return fc.oneof(...options);
}

const headerMutation: fc.Arbitrary<Mutation> = fc.oneof(
  hostileString.map((h) => m(`accept-${h.cls}`, (d) => d.headers.push(['Accept', h.value]))),
  fc.constantFrom('application/x-ndjson', 'text/csv', 'text/csv, application/x-ndjson', '*/*;q=abc', 'image/*', 'application/x-ndjson; q=\u00e9', 'text/csv;;;', '\u00ff\u00fe').map((v) => m('accept-variant', (d) => d.headers.push(['Accept', v]))),
  fc.constantFrom('application/x-ndjson', 'text/csv', 'text/csv, application/x-ndjson', '*/*;q=abc', 'image/*', 'application/x-ndjson; q=\u00e9', 'text/csv;;;', '\u00ff\u00fe').map((v) => m('accept-variant', (d) => d.headers.push(['Accept', v]))),
  fc.oneof(hostileString.map((h) => h.value), fc.constant('r'.repeat(5000))).map((v) => m('request-id-hostile', (d) => d.headers.push(['X-Request-Id', v]))),
  fc.constantFrom('gzip', 'br', 'deflate', 'x-unknown').map((v) => m('content-encoding', (d) => d.headers.push(['Content-Encoding', v]))),
  fc.constant(m('chunked-body', (d) => d.headers.push(['Transfer-Encoding', 'chunked']))),
  fc.constantFrom('evil.example', '\u00e9', '[::1', '').map((v) => m('host-header', (d) => d.headers.push(['Host', v]))),
  fc.constant(m('many-headers', (d) => {
    for (let i = 0; i < 150; i++) d.headers.push([`X-Fz-${i}`, 'v']);
  })),
);

/** Request-line and framing damage only raw TCP can send (Node's parser must refuse all of it). */
const rawFramingMutation: fc.Arbitrary<Mutation> = fc
  .constantFrom(
    'content-length-too-long',
    'content-length-garbage',
    'content-length-negative',
    'two-content-lengths',
    'cl-and-chunked',
    'bad-chunk-size',
    'nul-in-header-value',
    'header-without-colon',
    'obs-fold',
    'bare-lf',
    'huge-header-20k',
    'space-in-header-name',
    'http-version-garbage',
    'no-host',
    'request-line-extra-spaces',
    'utf8-header-value',
  )
  .map((kind) => m(`raw-${kind}`, (d) => {
    d.raw = {
      cls: kind,
      // RFC 9112 lets a server accept bare LF, extra spaces, obs-fold, NUL/UTF-8 in values (replaced or
      // kept), big headers, and CL with chunked (chunked wins); only the rest must be refused.
      fatal: ['content-length-garbage', 'content-length-negative', 'two-content-lengths', 'bad-chunk-size', 'http-version-garbage', 'no-host', 'space-in-header-name'].includes(kind),
      build(req) {
        const body = req.body ?? Buffer.alloc(0);
        const plain = (extra: string[], opts: { host?: boolean; cl?: boolean } = {}) => {
          const headers = opts.host === false ? req.headers.filter(([n]) => n.toLowerCase() !== 'host') : req.headers;
          const hasHost = headers.some(([n]) => n.toLowerCase() === 'host');
          const head = [`${req.method} ${req.path.toString('latin1')} HTTP/1.1`, ...(opts.host === false || hasHost ? [] : ['Host: 127.0.0.1']), ...headers.map(([n, v]) => `${n}: ${v}`), 'Connection: close', ...extra];
          if (opts.cl !== false) head.push(`Content-Length: ${body.length}`);
          return Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), body]);
        };
        switch (kind) {
          case 'content-length-too-long':
            return { bytes: plain([`Content-Length: ${body.length + 50}`], { cl: false }), halfClose: true, allowNoResponse: true };
          case 'content-length-garbage':
            return { bytes: plain(['Content-Length: abc'], { cl: false }), halfClose: false, allowNoResponse: false };
          case 'content-length-negative':
            return { bytes: plain(['Content-Length: -5'], { cl: false }), halfClose: false, allowNoResponse: false };
          case 'two-content-lengths':
            return { bytes: plain([`Content-Length: ${body.length}`, `Content-Length: ${body.length + 1}`], { cl: false }), halfClose: false, allowNoResponse: false };
          case 'cl-and-chunked':
            return { bytes: plain(['Transfer-Encoding: chunked'], {}), halfClose: false, allowNoResponse: false };
          case 'bad-chunk-size':
            return { bytes: Buffer.concat([plain(['Transfer-Encoding: chunked'], { cl: false }).subarray(0, -body.length || undefined), Buffer.from('zz\r\nabc\r\n0\r\n\r\n')]), halfClose: false, allowNoResponse: false };
          case 'nul-in-header-value':
            return { bytes: plain(['X-Fz: a\u0000b']), halfClose: false, allowNoResponse: false };
          case 'header-without-colon':
            return { bytes: plain(['This is not a header']), halfClose: false, allowNoResponse: false };
          case 'obs-fold':
            return { bytes: plain(['X-Fz: a', ' folded continuation']), halfClose: false, allowNoResponse: false };
          case 'bare-lf':
            return { bytes: Buffer.from(plain([]).toString('latin1').replace(/\r\n/g, '\n'), 'latin1'), halfClose: false, allowNoResponse: false };
          case 'huge-header-20k':
            return { bytes: plain([`X-Big: ${'h'.repeat(20_000)}`]), halfClose: false, allowNoResponse: false };
          case 'space-in-header-name':
            return { bytes: plain(['X Fz: 1']), halfClose: false, allowNoResponse: false };
          case 'http-version-garbage': {
            const b = plain([]).toString('latin1').replace(' HTTP/1.1\r\n', ' HTTP/1.7x\r\n');
            return { bytes: Buffer.from(b, 'latin1'), halfClose: false, allowNoResponse: false };
          }
          case 'no-host':
            return { bytes: plain([], { host: false }), halfClose: false, allowNoResponse: false };
          case 'request-line-extra-spaces': {
            const b = plain([]).toString('latin1').replace(`${req.method} `, `${req.method}   `);
            return { bytes: Buffer.from(b, 'latin1'), halfClose: false, allowNoResponse: false };
          }
          default:
            return { bytes: Buffer.concat([plain([]).subarray(0, 0), rawRequestBytes({ ...req, headers: [...req.headers, ['X-Fz', 'ü💥\u0000']] })]), halfClose: false, allowNoResponse: false };
        }
      },
    };
  }));

// ---- building and judging a request ----------------------------------------------------------

function segBytes(seg: Seg): Buffer {
  if (seg.mode === 'pct') return Buffer.from(pctEncode(wtf8(seg.text)), 'latin1');
  if (seg.mode === 'literal') return Buffer.from(seg.text, 'latin1');
  return wtf8(seg.text);
}

function authHeaders(auth: Auth, world: World): string[] {
  switch (auth.kind) {
    case 'none':
      return [];
    case 'value':
      return [auth.value];
    case 'role':
      return [`${auth.scheme}${auth.pad}${world.keys[auth.role]}`];
    case 'dup':
      return [...authHeaders(auth.first, world), ...authHeaders(auth.second, world)];
  }
}

/** The auth as the server sees it (Node keeps the first Authorization header). */
function effectiveAuth(auth: Auth): Exclude<Auth, { kind: 'dup' }> {
  return auth.kind === 'dup' ? effectiveAuth(auth.first) : auth;
}

function authFatal(d: Draft, world: World): string | null {
  const op = d.op;
  if (!op.secured) return null;
  const auth = effectiveAuth(d.auth);
  if (auth.kind === 'none') return 'no-key';
  if (auth.kind === 'value') return 'bad-key';
  if (auth.role === 'revoked') return 'revoked-key';
  const needed = scopeOf(op);
  if (needed && SCOPE_RANK[KEY_SCOPE[auth.role]] < SCOPE_RANK[needed]) return 'insufficient-scope';
  const limited = KEY_DATASETS[auth.role];
  if (limited.length > 0) {
    if (op.pathParams.includes('dataset') && !d.poisoned.has('dataset')) {
      const ds = decodeSeg(d.params.dataset);
      if (ds !== null && !limited.includes(ds)) return 'other-dataset-key';
    }
    if (op.key === 'POST /v1/datasets') return 'other-dataset-key';
    if (op.key === 'GET /v1/jobs/{id}' && !d.poisoned.has('id')) {
      const id = decodeSeg(d.params.id);
      const jobDataset = id === world.jobId ? world.main.name : id === world.otherJobId ? world.other.name : null;
      if (jobDataset && !limited.includes(jobDataset)) return 'other-dataset-key';
    }
  }
  return null;
}

/** What the server decodes a path segment to, or null when it cannot (bad percent-encoding). */
function decodeSeg(seg: Seg): string | null {
  try {
    return decodeURIComponent(segBytes(seg).toString('latin1'));
  } catch {
    return null;
  }
}

function jsonText(body: Extract<Body, { kind: 'json' }>): string {
  let text = JSON.stringify(body.value) ?? '';
  for (const [marker, token] of body.tokens) text = text.split(JSON.stringify(marker)).join(token);
  if (body.syntax) text = body.syntax(text);
  return text;
}

function jsonBytes(body: Extract<Body, { kind: 'json' }>): Buffer {
  const text = jsonText(body);
  if (!body.rawSurrogates) return Buffer.from(text, 'utf8');
  // \udXXX escapes become the surrogate's raw (invalid) UTF-8 bytes.
  return wtf8(text.replace(/\\u(d[89a-f][0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))));
}

interface BodyVerdict {
  fatal: string | null;
  itemOnly: boolean;
}

function bodyVerdict(d: Draft, world: World, bytes: Buffer | undefined): BodyVerdict {
  const op = d.op;
  if (!op.jsonBody && !op.multipart) return { fatal: null, itemOnly: false };
  if (d.body.kind === 'none') return { fatal: op.bodyRequired ? 'missing-body' : null, itemOnly: false };
  if (d.body.kind === 'bytes') {
    const ct = (d.body.contentType ?? '').toLowerCase();
    // Multipart to an embedding-only dataset can never store (the images are refused); anything else is not a JSON body.
    if (ct.startsWith('multipart/form-data') && op.multipart) return { fatal: 'multipart-to-embedding-dataset', itemOnly: false };
    return { fatal: `non-json-body(${d.body.cls})`, itemOnly: false };
  }
  const ct = d.body.contentType;
  // JSON-like types (+json, other charsets, odd parameters) are unclear: a server may read them, so they never count as fatal.
  if (ct !== null && /^\s*application\/([\w.-]+\+)?json/i.test(ct) && !/^application\/json\s*(;\s*charset=utf-?8\s*)?$/i.test(ct)) return { fatal: null, itemOnly: false };
  if (ct === null || !/^application\/json\b/i.test(ct)) return { fatal: `content-type ${ct ?? 'none'}`, itemOnly: false };
  let parsed: unknown;
  const raw = bytes ?? Buffer.alloc(0);
  if (raw.length === 0) return { fatal: 'empty-json', itemOnly: false };
  try {
    parsed = secureJsonParse(raw.toString('utf8'));
  } catch {
    return { fatal: 'invalid-json', itemOnly: false };
  }
  if (!op.jsonBody) return { fatal: null, itemOnly: false };
  let data: unknown;
  try {
    data = clone(parsed);
  } catch {
    // Too deeply nested to copy: only a top-level array or scalar can be judged without copying.
    return { fatal: parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) ? 'schema' : null, itemOnly: false };
  }
  if (!validator(bodyAjv, op.jsonBody)(data)) return { fatal: 'schema', itemOnly: false };
  if (op.key === INGEST) {
    const items = (data as { items?: unknown[] }).items ?? [];
    if (items.length > 1000) return { fatal: 'too-many-items', itemOnly: false };
    const ds = d.poisoned.has('dataset') ? null : decodeSeg(d.params.dataset);
    const dim = ds === world.other.name ? world.other.dim : world.main.dim;
    const later = new Set<string>();
    const judged = [...items].reverse().map((item) => {
      const stores = itemMightStore(item, dim, later);
      const id = (item as { externalId?: unknown })?.externalId;
      if (typeof id === 'string') later.add(id);
      return stores;
    });
    if (judged.every((s) => !s)) return { fatal: 'every-item-invalid', itemOnly: true };
  }
  return { fatal: null, itemOnly: false };
}

function queryFatal(d: Draft, rawQuery: string): string | null {
  const op = d.op;
  if (Object.keys(op.query).length === 0) return null;
  let parsed: Record<string, unknown>;
  try {
    parsed = { ...querystring.parse(rawQuery) };
  } catch {
    return null;
  }
  if (!validator(queryAjv, querySchema(op))(parsed)) return 'query-schema';
  if (op.key === 'GET /v1/datasets/{dataset}/selection') {
    const { fraction, count, cursor, format } = parsed as { fraction?: number; count?: number; cursor?: string; format?: string };
    if ((fraction === undefined) === (count === undefined)) return 'fraction-xor-count';
    if (fraction !== undefined && !(fraction > 0 && fraction <= 1)) return 'fraction-range';
    const accept = d.headers.filter(([n]) => n.toLowerCase() === 'accept').map(([, v]) => v.toLowerCase()).join(',');
    const chosen = format ?? (accept.includes('application/x-ndjson') ? 'ndjson' : accept.includes('text/csv') ? 'csv' : 'json');
    if (chosen === 'json' && cursor) return 'bad-cursor';
  }
  return null;
}

function finalize(d: Draft, world: World): RestCase {
  const op = d.op;
  let pathText = op.path;
  const pathParts: Buffer[] = [];
  let last = 0;
  for (const match of op.path.matchAll(/\{([^}]+)\}/g)) {
    pathParts.push(Buffer.from(op.path.slice(last, match.index), 'latin1'), segBytes(d.params[match[1]]));
    last = match.index! + match[0].length;
  }
  pathParts.push(Buffer.from(op.path.slice(last), 'latin1'));
  let path = Buffer.concat(pathParts);
  if (d.pathBroken) {
    const p = path.toString('latin1');
    pathText =
      d.pathBroken === 'trailing-slash' ? `${p}/` : d.pathBroken === 'double-slash' ? p.replace('/', '//') : d.pathBroken === 'dot-segment' ? p.replace(/\/([^/]*)$/, '/./$1') : d.pathBroken === 'dotdot-segment' ? `${p}/../${p.split('/').pop()}` : p.toUpperCase();
    path = Buffer.from(pathText, 'latin1');
  }
  const queryBytes = d.query.length ? Buffer.concat(d.query.flatMap((q, i) => [Buffer.from(i === 0 ? '' : '&'), segBytes(q.k), Buffer.from('='), segBytes(q.v)])) : Buffer.alloc(0);
  if (queryBytes.length) path = Buffer.concat([path, Buffer.from('?'), queryBytes]);

  const headers: Array<[string, string]> = [];
  for (const value of authHeaders(d.auth, world)) headers.push(['Authorization', value]);
  let body: Buffer | undefined;
  if (d.body.kind === 'json') {
    body = jsonBytes(d.body);
    if (d.body.contentType !== null) headers.push(['Content-Type', d.body.contentType]);
  } else if (d.body.kind === 'bytes') {
    body = d.body.bytes;
    if (d.body.contentType !== null) headers.push(['Content-Type', d.body.contentType]);
  }
  headers.push(...d.headers);
  const request: HttpRequest = { method: d.method, path, headers, body };

  const fatal: string[] = [];
  if (d.method !== op.method && !(d.method === 'HEAD' && op.method === 'GET')) fatal.push('wrong-method');
  // Hidden (static, docs) routes may serve anything for an odd file name.
  if (d.poisoned.size > 0 && !op.hidden) fatal.push(`poisoned-${[...d.poisoned].join('+')}`);
  const a = authFatal(d, world);
  if (a) fatal.push(a);
  if (d.raw?.fatal) fatal.push(`raw-${d.raw.cls}`);
  const verdict = bodyVerdict(d, world, body);
  if (verdict.fatal && !verdict.itemOnly) fatal.push(verdict.fatal);
  const q = queryFatal(d, queryBytes.toString('latin1'));
  if (q) fatal.push(q);
  // Path rewrites (trailing slash, dot segments, case) are never counted: a server may normalise them.
  const expect: Expectation = fatal.length > 0 ? 'fail' : verdict.itemOnly ? 'fail-or-store-nothing' : 'any';

  const transport: RestCase['transport'] = d.raw || !canSendWithNodeHttp(request) ? 'raw-tcp' : 'http';
  let raw: RestCase['raw'];
  if (d.raw) raw = d.raw.build(request);
  else if (transport === 'raw-tcp') raw = { bytes: rawRequestBytes(request), halfClose: false, allowNoResponse: false };
  const bodyText = body ? clip(body.toString('utf8'), 90) : '';
  const authText = d.auth.kind === 'role' ? `${d.auth.scheme} <${d.auth.role}>` : d.auth.kind === 'none' ? 'none' : d.auth.kind === 'dup' ? 'duplicated' : clip(d.auth.value, 30);
  const ct = headers.find(([n]) => n === 'Content-Type')?.[1];
  const summary = `${d.method} ${clip(path.toString('latin1'), 110)} auth=${authText}${ct !== undefined ? ` ct=${clip(ct, 40)}` : ''}${bodyText ? ` body=${bodyText}` : ''}`;
  return { route: op.key, method: d.method, request, transport, raw, expect, fatal, classes: d.classes, summary };
}

const METHODS_ON_PATH = new Map<string, Set<string>>();

/** One forced mutation per route that makes any request invalid (applied when the random ones did not). */
function forcedFatal(op: Op): fc.Arbitrary<Mutation> {
  const options: Array<fc.Arbitrary<Mutation>> = [];
  if (op.key === 'POST /v1/datasets') options.push(hostileString.map((h) => m(`forced-name-${h.cls}`, (d) => {
    if (d.body.kind === 'json' && d.body.value && typeof d.body.value === 'object') (d.body.value as Record<string, unknown>).name = h.value;
  })));
  if (op.key === 'POST /v1/keys') options.push(fc.constantFrom<unknown>([], ['root'], ['READ'], ['read ', 'x'], [null]).map((scopes) => m('forced-bad-scopes', (d) => {
    if (d.body.kind === 'json' && d.body.value && typeof d.body.value === 'object') (d.body.value as Record<string, unknown>).scopes = scopes;
  })));
  if (op.pathParams.length > 0) {
    options.push(fc.tuple(fc.constantFrom(...op.pathParams), hostileString).map(([name, h]) => m(`forced-path-${h.cls}`, (d) => {
      d.params[name] = { text: h.value, mode: 'pct' };
      d.poisoned.add(name);
    })));
    options.push(fc.tuple(fc.constantFrom(...op.pathParams), hex(6, 6)).map(([name, hex]) => m('forced-path-unknown', (d) => {
      d.params[name] = { text: `nope-${hex}`, mode: 'pct' };
      d.poisoned.add(name);
    })));
  }
  if (op.secured) options.push(fc.constantFrom<Auth>({ kind: 'none' }, { kind: 'value', value: 'Bearer pp_forged' }, { kind: 'role', role: 'revoked', scheme: 'Bearer', pad: ' ' }).map((auth) => m('forced-auth', (d) => (d.auth = auth))));
  if (options.length === 0) options.push(fc.constant(m('forced-method', (d) => (d.method = 'FOO'))));
  return fc.oneof(...options);
}

function initialDraft(op: Op, t: Template): Draft {
  return {
    op,
    method: op.method,
    params: Object.fromEntries(Object.entries(t.params).map(([k, v]) => [k, { text: v, mode: 'pct' as const }])),
    poisoned: new Set(t.poisoned),
    query: t.query.map(([k, v]) => ({ k: { text: k, mode: 'pct' as const }, v: { text: v, mode: 'pct' as const } })),
    auth: op.secured ? { kind: 'role', role: 'admin', scheme: 'Bearer', pad: ' ' } : { kind: 'none' },
    headers: [],
    body: t.body === undefined ? { kind: 'none' } : { kind: 'json', value: clone(t.body), contentType: 'application/json', tokens: new Map(), syntax: null, syntaxCls: null, rawSurrogates: false },
    raw: null,
    pathBroken: null,
    classes: [],
  };
}

/** Generated requests for one route: template, 1-3 random mutations, and a forced fatal one when needed. */
export function caseArb(op: Op, world: World): fc.Arbitrary<RestCase> {
  const methodsOnPath = METHODS_ON_PATH.get(op.path) ?? new Set([op.method]);
  const mutation = (t: Template): fc.Arbitrary<Mutation> => {
    const options: Array<{ weight: number; arbitrary: fc.Arbitrary<Mutation> }> = [
      { weight: 2, arbitrary: authMutation(op) },
      { weight: Object.keys(op.query).length > 0 ? 4 : 1, arbitrary: queryMutation(op) },
      { weight: 1, arbitrary: methodMutation(op, methodsOnPath) },
      { weight: 1, arbitrary: headerMutation },
      { weight: 1, arbitrary: rawFramingMutation },
    ];
    const path = pathMutation(op);
    if (path) options.push({ weight: op.pathParams.length > 0 ? 4 : 1, arbitrary: path });
    if (op.jsonBody || t.body !== undefined) options.push({ weight: 9, arbitrary: jsonMutation(op) }, { weight: 2, arbitrary: contentTypeMutation });
    if (op.multipart) options.push({ weight: 5, arbitrary: multipartMutation });
    if (op.method !== 'GET' && !op.jsonBody) options.push({ weight: 1, arbitrary: contentTypeMutation });
    return fc.oneof(...options);
  };
  return templateArb(op, world).chain((t) =>
    fc.tuple(fc.constant(t), fc.constantFrom(1, 1, 1, 2, 2, 3).chain((n) => fc.array(mutation(t), { minLength: n, maxLength: n })), forcedFatal(op)).map(([template, mutations, forced]) => {
      let d = initialDraft(op, template);
      for (const mu of mutations) {
        mu.apply(d);
        d.classes.push(mu.cls);
      }
      if (d.body.kind === 'json' && d.body.syntaxCls) d.classes.push(d.body.syntaxCls);
      let c = finalize(d, world);
      if (changesData(op) && c.expect === 'any') {
        forced.apply(d);
        d.classes.push(forced.cls);
        c = finalize(d, world);
        if (c.expect === 'any') {
          d = initialDraft(op, template);
          d.method = 'FOO';
          d.classes.push('forced-method');
          c = finalize(d, world);
        }
      }
      return c;
    }),
  );
}

export function registerPaths(ops: Op[]): void {
  METHODS_ON_PATH.clear();
  for (const op of ops) {
    const set = METHODS_ON_PATH.get(op.path) ?? new Set<string>();
    set.add(op.method);
    METHODS_ON_PATH.set(op.path, set);
  }
}

// ---- judging an answer -----------------------------------------------------------------------

export interface Judgement {
  rule: string;
  status: string;
  code: string;
  detail: string;
}

function errorCodeOf(a: Answer): string {
  try {
    const body = JSON.parse(a.body.toString('utf8')) as { error?: { code?: unknown } | string; code?: unknown };
    if (body.error && typeof body.error === 'object' && typeof body.error.code === 'string') return body.error.code;
    if (typeof body.code === 'string') return `(${body.code})`;
  } catch {
    /* not JSON */
  }
  return '-';
}

/** The error shape every 4xx must have. */
export function errorShapeProblem(a: Answer): string | null {
  const type = a.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) return `content-type ${type || 'none'}`;
  let body: any;
  try {
    body = JSON.parse(a.body.toString('utf8'));
  } catch {
    return 'body is not JSON';
  }
  const e = body?.error;
  if (!e || typeof e !== 'object' || Array.isArray(e)) return 'no error object';
  if (typeof e.code !== 'string' || !e.code) return 'error.code is not a string';
  if (typeof e.message !== 'string') return 'error.message is not a string';
  if (!e.details || typeof e.details !== 'object' || Array.isArray(e.details)) return 'error.details is not an object';
  return null;
}

/** What an error answer must never show: stack frames, SQL, ORM names, server file paths. */
export const LEAK = /\bat [\w.<>$ ]*\(?[^()\s]+:\d+:\d+\)?|node_modules|\/work\/|\bSELECT\b.*\bFROM\b|\bINSERT INTO\b|PrismaClient|PGlite|duplicate key value|violates .* constraint/;

export function judge(c: RestCase, a: Answer): Judgement[] {
  const out: Judgement[] = [];
  const status = a.status === null ? 'no-answer' : String(a.status);
  const code = a.status === null ? '-' : errorCodeOf(a);
  const detail = a.status === null ? (a.error ?? 'connection closed') : clip(a.body.toString('utf8'), 200);
  if (a.status === null) {
    if (!c.raw?.allowNoResponse) out.push({ rule: 'no-answer', status, code, detail });
    return out;
  }
  if (a.status >= 500) out.push({ rule: '5xx', status, code, detail });
  if (a.status >= 400 && a.status < 500 && c.method !== 'HEAD') {
    const problem = errorShapeProblem(a);
    if (problem) out.push({ rule: `error-shape (${problem})`, status, code, detail });
  }
  if (a.status >= 400 && LEAK.test(a.body.toString('utf8'))) out.push({ rule: 'internals in the error (stack, SQL, paths)', status, code, detail });
  if (a.status >= 200 && a.status < 300 && c.method !== 'HEAD' && /^application\/json\b/i.test(a.headers['content-type'] ?? '')) {
    try {
      JSON.parse(a.body.toString('utf8'));
    } catch {
      out.push({ rule: 'unparseable JSON 2xx', status, code, detail });
    }
  }
  if (a.status >= 200 && a.status < 300) {
    if (c.expect === 'fail') out.push({ rule: `accepted-invalid (${c.fatal.join(',')})`, status, code, detail });
    else if (c.expect === 'fail-or-store-nothing' && a.status === 200) {
      try {
        const counts = (JSON.parse(a.body.toString('utf8')) as { counts?: { stored?: number; updated?: number } }).counts;
        if ((counts?.stored ?? 0) + (counts?.updated ?? 0) > 0) out.push({ rule: 'stored-invalid-item', status, code, detail });
      } catch {
        out.push({ rule: 'unparseable-2xx', status, code, detail });
      }
    }
  }
  return out;
}

