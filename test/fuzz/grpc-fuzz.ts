import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import fc from 'fast-check';
import { LOADER_OPTIONS, PROTO_FILE } from '../../src/grpc/proto.js';
import { clip, hostileString, jsonHasNonAscii } from './hostile.js';
import { LEAK } from './rest-fuzz.js';
import { KEY_DATASETS, KEY_SCOPE, type KeyRole, type World } from './server.js';

/**
 * gRPC fuzzing over every method of protoprune.v1.Protoprune, enumerated from the loaded service
 * definition (unary, client-streaming and server-streaming alike). Wrong field types cannot be
 * sent through protobuf, so the mutations are hostile strings, out-of-range numbers, unknown enum
 * numbers, empty and huge repeated fields, raw (often undecodable) message bytes, and bad
 * metadata. What the server will see is known exactly: every message is decoded with the
 * method's own deserializer before it is judged, so wire conversions (uint32 wrap-around, float32
 * rounding, invalid UTF-8) are taken into account.
 */

type Msg = Record<string, any>;
type Scope = 'read' | 'write' | 'admin';
const RANK: Record<Scope, number> = { read: 0, write: 1, admin: 2 };

export interface Method {
  name: string;
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestType: string;
  serialize(m: Msg): Buffer;
  deserialize(b: Buffer): Msg;
}

export interface Proto {
  definition: protoLoader.PackageDefinition;
  service: grpc.ServiceDefinition;
  methods: Method[];
}

export function loadProto(): Proto {
  const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const service = definition['protoprune.v1.Protoprune'] as unknown as grpc.ServiceDefinition;
  const methods = Object.entries(service).map(([name, d]) => {
    const def = d as grpc.MethodDefinition<Msg, Msg> & { requestType: { type: { name: string } } };
    return {
      name,
      path: def.path,
      requestStream: def.requestStream,
      responseStream: def.responseStream,
      requestType: `protoprune.v1.${def.requestType.type.name}`,
      serialize: (m: Msg) => def.requestSerialize(m),
      deserialize: (b: Buffer) => def.requestDeserialize(b),
    };
  });
  return { definition, service, methods };
}

interface FieldDesc {
  name: string;
  jsName: string;
  type: string;
  typeName: string;
  repeated: boolean;
}

const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function fieldsOf(proto: Proto, typeName: string): FieldDesc[] {
  const t = proto.definition[typeName.replace(/^\./, '')] as { type?: { field?: Array<Record<string, any>> } } | undefined;
  return (t?.type?.field ?? []).map((f) => ({ name: f.name, jsName: camel(f.name), type: f.type, typeName: String(f.typeName ?? '').replace(/^\./, ''), repeated: f.label === 'LABEL_REPEATED' }));
}

// ---- method knowledge ------------------------------------------------------------------------

const SCOPES: Record<string, Scope> = {
  CreateDataset: 'admin',
  DeleteDataset: 'admin',
  IngestItems: 'write',
  DeleteItem: 'write',
  RequestRefit: 'write',
  RequestDedup: 'write',
  CreateApiKey: 'admin',
  ListApiKeys: 'admin',
  RevokeApiKey: 'admin',
};
const READ_PREFIX = /^(Get|List|Watch|Find|Stream|Select|Score|Export)/;

export function scopeOf(method: string): Scope | null {
  return SCOPES[method] ?? (READ_PREFIX.test(method) ? 'read' : null);
}
export function changesData(method: string): boolean {
  return !READ_PREFIX.test(method);
}
/** The request field naming the dataset a call touches. */
function datasetField(method: string, msg: Msg): string | undefined {
  if (typeof msg.dataset === 'string') return msg.dataset;
  if ((method === 'GetDataset' || method === 'DeleteDataset') && typeof msg.name === 'string') return msg.name;
  return undefined;
}

function templateFor(method: Method, proto: Proto, world: World): fc.Arbitrary<Msg[]> {
  const dim = world.main.dim;
  const vec = fc.array(fc.double({ min: -1, max: 1, noNaN: true }).map((x) => x || 0.5), { minLength: dim, maxLength: dim });
  const one = (a: fc.Arbitrary<Msg>) => a.map((x) => [x]);
  switch (method.name) {
    case 'CreateDataset':
      return one(fc.record({ n: fc.nat(99_999), dimension: fc.constantFrom(4, 8) }).map(({ n, dimension }) => ({ name: `fz-g-${n}`, dimension, k: 3, settings: { autoRefit: false } })));
    case 'GetDataset':
    case 'DeleteDataset':
      return one(fc.constantFrom(world.main.name, world.other.name).map((name) => ({ name })));
    case 'IngestItems':
      return fc.array(
        fc.array(fatalItem(dim, world), { minLength: 1, maxLength: 3 }).map((items) => ({ dataset: world.main.name, items })),
        { minLength: 1, maxLength: 3 },
      );
    case 'Select':
      return one(
        fc.record({ order: fc.constantFrom('SELECTION_ORDER_HARDEST', 'SELECTION_ORDER_RANDOM', 'SELECTION_ORDER_STRATIFIED'), fraction: fc.constantFrom(0.1, 0.5), chunkSize: fc.constantFrom(7, 100) }).map((r) => ({ dataset: world.main.name, ...r })),
      );
    case 'ScoreBatch':
      return one(vec.map((embedding) => ({ dataset: world.main.name, candidates: [{ externalId: 'cand-1', embedding }], policy: { order: 'SELECTION_ORDER_HARDEST', fraction: 0.3 } })));
    case 'GetJob':
    case 'WatchJob':
      return one(fc.constantFrom(world.jobId, world.otherJobId).map((id) => ({ id })));
    case 'FindDuplicates':
    case 'StreamDuplicates':
      return one(fc.constantFrom({ dataset: world.main.name, epsilon: 0.05 }, { dataset: world.main.name, pageSize: 10 }, { dataset: world.main.name, jobId: world.jobId }));
    case 'RequestDedup':
      return one(fc.constant({ dataset: world.main.name, epsilon: 0.05 }));
    case 'ExportScores':
      return one(fc.constantFrom({ dataset: world.main.name, chunkSize: 50 }, { dataset: world.main.name, epsilon: 0.05 }, { dataset: world.main.name, jobId: world.jobId }));
    case 'GetItem':
    case 'DeleteItem':
      return one(fc.constantFrom(...world.targetIds).map((externalId) => ({ dataset: world.main.name, externalId })));
    case 'CreateApiKey':
      return one(fc.nat(9999).map((n) => ({ name: `fz-gkey-${n}`, scopes: ['read'], datasets: [world.main.name] })));
    case 'RevokeApiKey':
      return one(fc.uuid().map((id) => ({ id })));
    default: {
      // An unknown method: its string fields get the obvious values.
      const msg: Msg = {};
      for (const f of fieldsOf(proto, method.requestType)) {
        if (f.type !== 'TYPE_STRING' || f.repeated) continue;
        msg[f.jsName] = f.name === 'dataset' || f.name === 'name' ? world.main.name : f.name === 'id' ? world.jobId : f.name === 'external_id' ? world.targetIds[0] : 'x';
      }
      return one(fc.constant(msg));
    }
  }
}

/** An item the contract says must not be stored. */
function fatalItem(dim: number, world: World): fc.Arbitrary<Msg> {
  const vec = (n: number) => Array.from({ length: n }, (_, i) => ((i % 3) + 1) / 4);
  const f32 = (values: number[]) => {
    const b = Buffer.alloc(values.length * 4);
    values.forEach((v, i) => b.writeFloatLE(v, i * 4));
    return b;
  };
  const id = fc.oneof(fc.constantFrom(...world.targetIds), hostileString.map((h) => h.value), fc.nat(999).map((n) => `g-new-${n}`));
  const kind: fc.Arbitrary<Msg> = fc.oneof(
    fc.constant({ embedding: vec(dim - 1) }),
    fc.constant({ embedding: vec(dim + 1) }),
    fc.constantFrom(1e39, -1e39, Number.NaN, Infinity, 3.5e38).map((big) => ({ embedding: [big, ...vec(dim - 1)] })),
    fc.constant({ embedding: Array(dim).fill(0) }),
    fc.constant({ embedding: Array(dim).fill(1e-46) }),
    fc.constantFrom(1, 5, 4 * dim - 1, 4 * dim + 4).map((n) => ({ embeddingF32le: Buffer.alloc(n, 0x3f) })),
    fc.constant({ embeddingF32le: f32(Array(dim).fill(Number.NaN)) }),
    fc.constant({ embedding: vec(dim), embeddingF32le: f32(vec(dim)) }),
    fc.constant({}),
    fc.uint8Array({ minLength: 1, maxLength: 32 }).map((b) => ({ image: Buffer.from(b) })),
    fc.constantFrom('{', '[]', '"x"', '1', 'null', `{"a":"${'x'.repeat(17_000)}"}`, '{"a":1}{', '\u0000').map((metadataJson) => ({ embedding: vec(dim), metadataJson })),
  );
  return fc.tuple(id, kind, fc.option(hostileString, { nil: undefined })).map(([externalId, k, h]) => ({
    externalId,
    ...k,
    ...(h && !('metadataJson' in k) ? { metadataJson: JSON.stringify({ [h.value]: h.value }) } : {}),
  }));
}

// ---- the oracle ------------------------------------------------------------------------------

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const cp = (s: string) => [...s].length;

function itemMightStore(item: Msg, dim: number, later: Set<string>): boolean {
  const id = item.externalId;
  if (typeof id !== 'string' || id.length === 0 || cp(id) > 512) return false;
  if (later.has(id)) return false;
  const floats = (item.embedding as number[] | undefined) ?? [];
  const bytes = (item.embeddingF32le as Buffer | undefined) ?? Buffer.alloc(0);
  const image = (item.image as Buffer | undefined) ?? Buffer.alloc(0);
  if ((floats.length > 0 ? 1 : 0) + (bytes.length > 0 ? 1 : 0) + (image.length > 0 ? 1 : 0) !== 1) return false;
  if (image.length > 0) return false; // embedding-only datasets refuse images
  let values: number[] = floats;
  if (bytes.length > 0) {
    if (bytes.length % 4 !== 0) return false;
    values = Array.from({ length: bytes.length / 4 }, (_, i) => Buffer.from(bytes).readFloatLE(i * 4));
  }
  if (values.length !== dim) return false;
  let sq = 0;
  for (const v of values) {
    const x = Math.fround(v);
    if (!Number.isFinite(x)) return false;
    sq += x * x;
  }
  if (!(sq > 0)) return false;
  const meta = item.metadataJson as string | undefined;
  if (meta) {
    try {
      const parsed = JSON.parse(meta) as unknown;
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return false;
    } catch {
      return false;
    }
    if (Buffer.byteLength(meta) > 16 * 1024) return false;
  }
  return true;
}

type Auth = { kind: 'role'; role: KeyRole; scheme: string; suffix?: string } | { kind: 'none' } | { kind: 'value'; value: string } | { kind: 'bin'; bytes: Buffer } | { kind: 'dup'; values: Auth[] };

function authFatal(method: string, auth: Auth, decoded: Msg[], world: World): string | null {
  let a: Auth = auth;
  while (a.kind === 'dup') a = a.values[0] ?? { kind: 'none' };
  if (a.kind === 'none' || a.kind === 'bin') return 'no-key';
  if (a.kind === 'value') return 'bad-key';
  if (a.suffix && a.suffix.trim()) return 'bad-key';
  if (a.role === 'revoked') return 'revoked-key';
  const needed = scopeOf(method);
  if (needed && RANK[KEY_SCOPE[a.role]] < RANK[needed]) return 'insufficient-scope';
  const limited = KEY_DATASETS[a.role];
  if (limited.length > 0 && decoded.length > 0) {
    const ds = datasetField(method, decoded[0]);
    if (ds !== undefined && !limited.includes(ds)) return 'other-dataset-key';
    if (method === 'CreateDataset') return 'other-dataset-key';
    if ((method === 'GetJob' || method === 'WatchJob') && decoded[0].id === world.jobId && !limited.includes(world.main.name)) return 'other-dataset-key';
  }
  return null;
}

const inRange = (v: unknown, lo: number, hi: number) => typeof v === 'number' && v >= lo && v <= hi;

/** Why the decoded request must fail, or null; `itemOnly` when only its items are invalid. */
function valueFatal(method: string, msgs: Msg[], world: World): { fatal: string | null; itemOnly: boolean } {
  const known = new Set([world.main.name, world.other.name]);
  const msg = msgs[0] ?? {};
  const ds = datasetField(method, msg);
  const f = (fatal: string | null) => ({ fatal, itemOnly: false });
  switch (method) {
    case 'CreateDataset': {
      if (typeof msg.name !== 'string' || !NAME.test(msg.name)) return f('invalid-name');
      if (known.has(msg.name)) return f('existing-name');
      if (msg.dimension !== undefined && !inRange(msg.dimension, 1, 4000)) return f('dimension-range');
      if (msg.k !== undefined && !inRange(msg.k, 1, 100_000)) return f('k-range');
      const s = (msg.settings ?? {}) as Msg;
      if (s.minItemsForFit !== undefined && !(s.minItemsForFit >= 1)) return f('settings-range');
      if (s.duplicateEpsilon !== undefined && !inRange(s.duplicateEpsilon, 0, 2)) return f('settings-range');
      if (s.tolerance !== undefined && !(s.tolerance >= 0)) return f('settings-range');
      const r = (s.refit ?? {}) as Msg;
      if (r.meanDrift !== undefined && !(r.meanDrift > 0)) return f('settings-range');
      if (r.maxDrift !== undefined && !(r.maxDrift > 0)) return f('settings-range');
      if (r.arrivedFraction !== undefined && !(r.arrivedFraction > 0 && r.arrivedFraction <= 1)) return f('settings-range');
      return f(null);
    }
    case 'IngestItems': {
      if (msgs.length === 0) return f('empty-stream');
      if (!known.has(msg.dataset)) return f('unknown-dataset');
      if ((msg.items ?? []).length > 1000) return f('too-many-items');
      const later = new Set<string>();
      const dim = msg.dataset === world.other.name ? world.other.dim : world.main.dim;
      const all = msgs.flatMap((x) => (x.items ?? []) as Msg[]);
      const stores = [...all].reverse().some((item) => {
        const s = itemMightStore(item, dim, later);
        if (typeof item.externalId === 'string') later.add(item.externalId);
        return s;
      });
      return stores ? f(null) : { fatal: 'every-item-invalid', itemOnly: true };
    }
    case 'DeleteItem':
    case 'GetItem':
      if (!known.has(ds ?? '')) return f('unknown-dataset');
      if (ds === world.main.name ? !world.mainIds.has(msg.externalId) : !/^o-\d+$/.test(msg.externalId)) return f('unknown-item');
      return f(null);
    case 'GetJob':
    case 'WatchJob':
      return f(msg.id === world.jobId || msg.id === world.otherJobId ? null : 'unknown-job');
    case 'RevokeApiKey':
      return f(Object.values(world.keyIds).includes(msg.id) ? null : 'unknown-key');
    case 'CreateApiKey': {
      const scopes = (msg.scopes ?? []) as string[];
      if (typeof msg.name !== 'string' || msg.name.trim().length === 0 || cp(msg.name.trim()) > 128) return f('invalid-name');
      if (scopes.length === 0 || scopes.some((s) => !['read', 'write', 'admin'].includes(s))) return f('invalid-scopes');
      if (((msg.datasets ?? []) as string[]).some((d) => !NAME.test(d))) return f('invalid-datasets');
      return f(null);
    }
    case 'Select': {
      if (!known.has(ds ?? '')) return f('unknown-dataset');
      // Unset or SELECTION_ORDER_UNSPECIFIED is the default order; an unknown enum number fails.
      if (typeof msg.order === 'number') return f('order');
      if (typeof msg.balance === 'number') return f('balance');
      if ((msg.fraction === undefined) === (msg.count === undefined)) return f('fraction-xor-count');
      if (msg.fraction !== undefined && !(msg.fraction > 0 && msg.fraction <= 1)) return f('fraction-range');
      if (msg.chunkSize !== undefined && !inRange(msg.chunkSize, 1, 5000)) return f('chunk-size');
      if (msg.bins !== undefined && !inRange(msg.bins, 1, 10_000)) return f('bins');
      if (msg.outlierFraction !== undefined && !(msg.outlierFraction >= 0 && msg.outlierFraction < 1)) return f('outlier-fraction');
      return f(null);
    }
    case 'ScoreBatch': {
      if (!known.has(ds ?? '')) return f('unknown-dataset');
      if ((msg.candidates ?? []).length > 1000) return f('too-many-items');
      const p = (msg.policy ?? {}) as Msg;
      if (typeof p.order === 'number' || typeof p.balance === 'number') return f('policy-enum');
      if (p.fraction !== undefined && !(p.fraction > 0 && p.fraction <= 1)) return f('policy-fraction');
      if (p.epsilon !== undefined && !inRange(p.epsilon, 0, 2)) return f('policy-epsilon');
      return f(null);
    }
    case 'FindDuplicates':
    case 'StreamDuplicates':
    case 'RequestDedup':
      if (!known.has(ds ?? '')) return f('unknown-dataset');
      if (msg.epsilon !== undefined && !inRange(msg.epsilon, 0, 2)) return f('epsilon-range');
      if (method === 'FindDuplicates' && msg.pageSize !== undefined && !inRange(msg.pageSize, 1, 5000)) return f('page-size');
      return f(null);
    case 'ExportScores':
      if (!known.has(ds ?? '')) return f('unknown-dataset');
      if (msg.epsilon !== undefined && !inRange(msg.epsilon, 0, 2)) return f('epsilon-range');
      if (msg.chunkSize !== undefined && !inRange(msg.chunkSize, 1, 5000)) return f('chunk-size');
      return f(null);
    default:
      if (ds !== undefined && !known.has(ds)) return f('unknown-dataset');
      return f(null);
  }
}

// ---- calls -----------------------------------------------------------------------------------

export type Expectation = 'fail' | 'fail-or-store-nothing' | 'any';

export interface GrpcCase {
  method: string;
  kind: 'typed' | 'raw';
  /** Typed messages (as given to the client) or raw message bytes. */
  messages: Msg[];
  raw: Buffer[];
  auth: Auth;
  extraMetadata: Array<[string, string | Buffer]>;
  expect: Expectation;
  fatal: string[];
  classes: string[];
  /** Carries non-ASCII text the server may echo into error metadata (sent last). */
  risky: boolean;
  summary: string;
}

interface Slot {
  parent: Msg;
  field: FieldDesc;
}

function slots(proto: Proto, typeName: string, msg: Msg, out: Slot[] = [], depth = 0): Slot[] {
  if (depth > 5) return out;
  for (const field of fieldsOf(proto, typeName)) {
    out.push({ parent: msg, field });
    const v = msg[field.jsName];
    if (field.type === 'TYPE_MESSAGE') {
      if (field.repeated && Array.isArray(v)) v.slice(0, 4).forEach((x) => x && typeof x === 'object' && slots(proto, field.typeName, x, out, depth + 1));
      else if (v && typeof v === 'object') slots(proto, field.typeName, v, out, depth + 1);
    }
  }
  return out;
}

const NUMBERS = [0, -1, 4_294_967_295, 4_294_967_296, 2 ** 53, -(2 ** 53), 1e39, -1e39, Number.NaN, Infinity, -Infinity, 1.5, 16_001, 4001, 100_001, 5001, -0, 5e-324];

function valueFor(field: FieldDesc, pick: number, h: { value: string; cls: string }, bytes: Uint8Array): { value: unknown; cls: string } | null {
  const list = <T>(xs: T[]) => xs[pick % xs.length];
  if (field.repeated) {
    switch (pick % 4) {
      case 0:
        return { value: [], cls: 'repeated-empty' };
      case 1:
        return { value: field.type === 'TYPE_STRING' ? Array(5000).fill(h.value) : field.type === 'TYPE_MESSAGE' ? Array.from({ length: 1001 }, () => ({ externalId: 'dup', embedding: [0] })) : Array(5000).fill(1e39), cls: 'repeated-huge' };
      case 2:
        return field.type === 'TYPE_STRING' ? { value: [h.value, '', h.value], cls: `repeated-${h.cls}` } : { value: field.type === 'TYPE_MESSAGE' ? [{}] : [Number.NaN, 1e39], cls: 'repeated-odd' };
      default:
        return null;
    }
  }
  switch (field.type) {
    case 'TYPE_STRING':
      return list([
        { value: h.value, cls: `string-${h.cls}` },
        { value: h.value, cls: `string-${h.cls}` },
        { value: '', cls: 'string-empty' },
        { value: 'z'.repeat(list([129, 513, 600, 5000, 100_000])), cls: 'string-long' },
      ]);
    case 'TYPE_UINT32':
    case 'TYPE_INT32':
    case 'TYPE_UINT64':
    case 'TYPE_INT64':
    case 'TYPE_SINT64':
    case 'TYPE_FIXED64':
      return { value: list(NUMBERS), cls: 'int-out-of-range' };
    case 'TYPE_DOUBLE':
    case 'TYPE_FLOAT':
      return { value: list([Number.NaN, Infinity, -Infinity, 1e39, -1e39, -0, 5e-324, 1e308, 2, -1, 3]), cls: 'float-odd' };
    case 'TYPE_ENUM':
      return { value: list([99, -1, 2_147_483_647, 7]), cls: 'enum-unknown-number' };
    case 'TYPE_BYTES':
      return list([
        { value: Buffer.from(bytes), cls: 'bytes-random' },
        { value: Buffer.alloc(0), cls: 'bytes-empty' },
        { value: Buffer.alloc(1_100_000, 1), cls: 'bytes-over-limit' },
      ]);
    case 'TYPE_MESSAGE':
      return list([
        { value: null, cls: 'message-unset' },
        { value: {}, cls: 'message-empty' },
      ]);
    case 'TYPE_BOOL':
      return { value: pick % 2 === 0, cls: 'bool-flip' };
    default:
      return null;
  }
}

const fieldMutation = fc.record({ slot: fc.nat(), pick: fc.nat(), h: hostileString, bytes: fc.uint8Array({ maxLength: 48 }), message: fc.nat() });

const garbageAuth = fc.oneof(
  fc.constantFrom('Bearer pp_forged0000000000000000000000000', 'Bearer', 'Basic dXNlcjpwYXNz', 'Bearer a b', '', 'bearer', 'Token x', 'Bearer pp_%00'),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 24 }).map((s) => `Bearer ${s.replace(/[^ -~]/g, '?')}`),
  fc.constantFrom(4000, 12_000).map((n) => `Bearer ${'k'.repeat(n)}`),
);

const authArb: fc.Arbitrary<{ auth: Auth; cls: string }> = fc.oneof(
  { weight: 14, arbitrary: fc.constant({ auth: { kind: 'role', role: 'admin', scheme: 'Bearer' } as Auth, cls: 'key-admin' }) },
  { weight: 3, arbitrary: fc.constantFrom<KeyRole>('adminAll', 'writer', 'reader', 'readerMain', 'writerOther', 'adminOther', 'revoked').map((role) => ({ auth: { kind: 'role', role, scheme: 'Bearer' } as Auth, cls: `key-${role}` })) },
  { weight: 1, arbitrary: fc.constant({ auth: { kind: 'none' } as Auth, cls: 'auth-missing' }) },
  { weight: 1, arbitrary: garbageAuth.map((value) => ({ auth: { kind: 'value', value } as Auth, cls: value.length > 3000 ? 'auth-huge' : 'auth-garbage' })) },
  { weight: 1, arbitrary: fc.constantFrom('bearer', 'BEARER').map((scheme) => ({ auth: { kind: 'role', role: 'admin', scheme } as Auth, cls: 'auth-scheme-case' })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => ({ auth: { kind: 'bin', bytes: Buffer.from(b) } as Auth, cls: 'auth-bin' })) },
  // grpc-js refuses to send two authorization values, so the closest is a valid key with junk after it.
  { weight: 1, arbitrary: fc.constantFrom('x', ' extra', ',Bearer pp_x', '%00', '  ').map((suffix) => ({ auth: { kind: 'role', role: 'admin', scheme: 'Bearer', suffix } as Auth, cls: suffix.trim() ? 'auth-key-with-junk' : 'auth-key-trailing-space' })) },
);

const extraMetadataArb = fc.option(
  fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => [['x-fuzz-bin', Buffer.from(b)]] as Array<[string, string | Buffer]>),
    fc.string({ unit: 'binary-ascii', maxLength: 40 }).map((s) => [['x-fuzz', s.replace(/[^ -~]/g, '.')]] as Array<[string, string | Buffer]>),
    fc.constant(Array.from({ length: 60 }, (_, i) => [`x-many-${i}`, 'v'] as [string, string | Buffer])),
    fc.constant([['error-code', 'INJECTED'], ['error-details', '{"forged":true}']] as Array<[string, string | Buffer]>),
  ),
  { nil: [] as Array<[string, string | Buffer]> },
);

/** Raw bytes for one message: random, cut-off encodings of the template, or deliberately undecodable. */
type RawPick = { raw: Buffer[]; cls: string };

function rawMessages(method: Method, template: Msg[]): fc.Arbitrary<RawPick> {
  const encoded = template.map((m) => method.serialize(m));
  return fc.oneof<fc.Arbitrary<RawPick>[]>(
    fc.uint8Array({ minLength: 0, maxLength: 96 }).map((b) => ({ raw: [Buffer.from(b)], cls: 'raw-random' })),
    fc.double({ min: 0.05, max: 0.95, noNaN: true }).map((f) => ({ raw: encoded.map((e) => e.subarray(0, Math.max(1, Math.floor(e.length * f)))), cls: 'raw-truncated' })),
    fc.constantFrom(
      [0x7f, 0x01],
      [0x0a, 0x7f, 0x61],
      [0x08, 0xff, 0xff, 0xff],
      [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
      [0x00],
      [0x7b, 0x7d],
      [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ).map((bytes) => ({ raw: [Buffer.from(bytes)], cls: 'raw-invalid-wire' })),
    fc.constantFrom([0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80], [0x00, 0xff]).map((bad) => ({
      raw: [Buffer.concat([Buffer.from([0x0a, bad.length + 2]), Buffer.from('a'), Buffer.from(bad), Buffer.from('b')])],
      cls: 'raw-invalid-utf8',
    })),
    fc.constant({ raw: [Buffer.alloc(0)], cls: 'raw-empty' }),
    fc.constant({ raw: [Buffer.concat([...encoded, Buffer.from([0x7f])])], cls: 'raw-trailing-garbage' }),
    // Valid protobuf with fields the schema does not know (field 99 varint, field 100 bytes): must be ignored.
    fc.constant({ raw: encoded.map((e) => Buffer.concat([e, Buffer.from([0x98, 0x06, 0x2a, 0xa2, 0x06, 0x03, 0x61, 0x62, 0x63])])), cls: 'raw-unknown-fields' }),
    // A string field repeated: protobuf keeps the last one.
    fc.constant({ raw: encoded.map((e) => Buffer.concat([e, Buffer.from([0x0a, 0x03, 0x7a, 0x7a, 0x7a])])), cls: 'raw-repeated-field-1' }),
  );
}

function describeAuth(a: Auth): string {
  switch (a.kind) {
    case 'role':
      return `${a.scheme} <${a.role}>${a.suffix ? JSON.stringify(a.suffix) : ''}`;
    case 'none':
      return 'none';
    case 'value':
      return clip(a.value, 24);
    case 'bin':
      return 'authorization-bin';
    case 'dup':
      return `dup(${a.values.map(describeAuth).join(',')})`;
  }
}

export function caseArb(method: Method, proto: Proto, world: World): fc.Arbitrary<GrpcCase> {
  const forcedAuth = fc.constantFrom<Auth>({ kind: 'none' }, { kind: 'value', value: 'Bearer pp_forged' }, { kind: 'role', role: 'revoked', scheme: 'Bearer' });
  return templateFor(method, proto, world).chain((template) =>
    fc
      .record({
        raw: fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: rawMessages(method, template) }),
        mutations: fc.array(fieldMutation, { minLength: 1, maxLength: 3 }),
        auth: authArb,
        extra: extraMetadataArb,
        forced: forcedAuth,
        forcedH: hostileString,
        forcedPick: fc.nat(),
        streamShape: fc.constantFrom('as-is', 'as-is', 'no-messages', 'other-dataset-later'),
      })
      .map(({ raw, mutations, auth, extra, forced, forcedH, forcedPick, streamShape }) => {
        const classes: string[] = [auth.cls];
        const messages = template.map((m) => structuredClone(m));
        let rawBytes: Buffer[] = [];
        if (raw) {
          rawBytes = method.requestStream ? raw.raw : raw.raw.slice(0, 1);
          classes.push(raw.cls);
        } else {
          for (const mu of mutations) {
            const target = messages[mu.message % Math.max(1, messages.length)];
            if (!target) continue;
            const all = slots(proto, method.requestType, target);
            if (all.length === 0) continue;
            const slot = all[mu.slot % all.length];
            const v = valueFor(slot.field, mu.pick, mu.h, mu.bytes);
            if (!v) continue;
            slot.parent[slot.field.jsName] = v.value;
            classes.push(`${slot.field.name}:${v.cls}`);
          }
          if (method.requestStream && streamShape === 'no-messages') {
            messages.length = 0;
            classes.push('stream-no-messages');
          } else if (method.requestStream && streamShape === 'other-dataset-later' && messages.length > 0) {
            messages.push({ ...structuredClone(messages[0]), dataset: world.other.name });
            classes.push('stream-dataset-switch');
          }
        }
        // What the server will decode.
        let decoded: Msg[] | null = [];
        let undecodable = false;
        let serializeError: string | null = null;
        try {
          decoded = raw ? rawBytes.map((b) => method.deserialize(b)) : messages.map((m) => method.deserialize(method.serialize(m)));
        } catch (error) {
          if (raw) undecodable = true;
          else serializeError = (error as Error).message;
          decoded = null;
        }
        if (serializeError) {
          // The client cannot encode it (a mutation protobuf has no wire form for): send it raw as undecodable bytes instead.
          rawBytes = [Buffer.from([0x7f, 0x01])];
          undecodable = true;
          classes.push('raw-invalid-wire');
        }
        const judgeWith = (a: Auth) => {
          const fatal: string[] = [];
          if (undecodable) fatal.push('undecodable');
          const af = authFatal(method.name, a, decoded ?? [], world);
          if (af) fatal.push(af);
          const vf = decoded ? valueFatal(method.name, decoded, world) : { fatal: null, itemOnly: false };
          if (vf.fatal && !vf.itemOnly) fatal.push(vf.fatal);
          const expect: Expectation = fatal.length > 0 ? 'fail' : vf.itemOnly ? 'fail-or-store-nothing' : 'any';
          return { fatal, expect };
        };
        let finalAuth = auth.auth;
        let verdict = judgeWith(finalAuth);
        if (changesData(method.name) && verdict.expect === 'any' && !raw && !serializeError && messages.length > 0) {
          // Prefer a fatal value that the handler itself must refuse (so the call gets past authentication).
          const value = forcedPick % 2 === 0 ? forcedH.value : `nope-${forcedPick}`;
          const first = messages[0];
          if (method.name === 'CreateDataset' || method.name === 'DeleteDataset') first.name = forcedH.value;
          else if (method.name === 'DeleteItem') first.externalId = value;
          else if (method.name === 'CreateApiKey') first.scopes = forcedPick % 2 === 0 ? ['root'] : [];
          else if ('dataset' in first) first.dataset = value;
          classes.push('forced-value');
          try {
            decoded = messages.map((m) => method.deserialize(method.serialize(m)));
            verdict = judgeWith(finalAuth);
          } catch {
            /* judged below with the forced key */
          }
        }
        if (changesData(method.name) && verdict.expect === 'any') {
          finalAuth = forced;
          classes.push('forced-auth');
          verdict = judgeWith(finalAuth);
        }
        const risky = jsonHasNonAscii(decoded ?? []) || (raw !== null && rawBytes.some((b) => /[^\x00-\x7f]/.test(b.toString('utf8'))));
        const shown = raw || serializeError ? rawBytes.map((b) => b.subarray(0, 24).toString('hex')).join('|') : clip(JSON.stringify(messages, function (this: unknown, k: string, v: unknown) {
          const original = (this as Record<string, unknown>)[k];
          if (ArrayBuffer.isView(original)) return `<${(original as Uint8Array).length} bytes>`;
          if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
          return v;
        }), 150);
        return {
          method: method.name,
          kind: raw || serializeError ? 'raw' : 'typed',
          messages,
          raw: rawBytes,
          auth: finalAuth,
          extraMetadata: extra,
          expect: verdict.expect,
          fatal: verdict.fatal,
          classes,
          risky,
          summary: `${method.name} ${raw || serializeError ? 'raw' : 'typed'} auth=${describeAuth(finalAuth)} ${shown}`,
        } satisfies GrpcCase;
      }),
  );
}

// ---- sending ---------------------------------------------------------------------------------

export interface GrpcAnswer {
  code: number;
  details: string;
  errorCode: string;
  /** The `error-details` trailer as sent (a JSON object by contract), if any. */
  errorDetails?: string;
  /** The unary/client-stream response, or the number of streamed messages. */
  response: Msg | null;
  streamed: number;
}

function metadataFor(c: GrpcCase, world: World): grpc.Metadata {
  const md = new grpc.Metadata();
  const add = (a: Auth) => {
    if (a.kind === 'role') md.add('authorization', `${a.scheme} ${world.keys[a.role]}${a.suffix ?? ''}`);
    else if (a.kind === 'value') md.add('authorization', a.value);
    else if (a.kind === 'bin') md.add('authorization-bin', a.bytes);
    else if (a.kind === 'dup') a.values.forEach(add);
  };
  add(c.auth);
  for (const [k, v] of c.extraMetadata) md.add(k, v as string);
  return md;
}

const identity = (b: Buffer) => b;

export class GrpcSender {
  private client: grpc.Client;

  constructor(
    private readonly proto: Proto,
    private readonly port: () => number,
    private readonly timeoutMs = 12_000,
  ) {
    this.client = this.connect();
  }

  private connect(): grpc.Client {
    const Client = grpc.makeGenericClientConstructor(this.proto.service, 'Protoprune');
    return new Client(`127.0.0.1:${this.port()}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  }

  /** A new channel (after the server restarted). */
  reconnect(): void {
    this.client.close();
    this.client = this.connect();
  }

  close(): void {
    this.client.close();
  }

  send(c: GrpcCase, method: Method, world: World): Promise<GrpcAnswer> {
    const options = { deadline: Date.now() + this.timeoutMs };
    return new Promise((resolve) => {
      let md: grpc.Metadata;
      try {
        md = metadataFor(c, world);
      } catch (error) {
        resolve({ code: -1, details: `client refused: ${(error as Error).message}`, errorCode: '', response: null, streamed: 0 });
        return;
      }
      let streamed = 0;
      const finish = (error: grpc.ServiceError | null, response: Msg | null) => {
        const [code] = error?.metadata?.get('error-code') ?? [];
        const [details] = error?.metadata?.get('error-details') ?? [];
        resolve({ code: error ? error.code : grpc.status.OK, details: error?.details ?? '', errorCode: typeof code === 'string' ? code : '', errorDetails: typeof details === 'string' ? details : undefined, response, streamed });
      };
      const raw = c.kind === 'raw';
      const serialize = raw ? identity : method.serialize;
      const items = raw ? c.raw : c.messages;
      const deserialize = (b: Buffer) => this.proto.service[method.name].responseDeserialize(b) as Msg;
      try {
        if (!method.requestStream && !method.responseStream) {
          this.client.makeUnaryRequest(method.path, serialize as (x: unknown) => Buffer, deserialize, items[0] ?? (raw ? Buffer.alloc(0) : {}), md, options, (e, r) => finish(e, (r as Msg) ?? null));
        } else if (method.requestStream && !method.responseStream) {
          const call = this.client.makeClientStreamRequest(method.path, serialize as (x: unknown) => Buffer, deserialize, md, options, (e, r) => finish(e, (r as Msg) ?? null));
          for (const item of items) call.write(item);
          call.end();
        } else if (!method.requestStream && method.responseStream) {
          const call = this.client.makeServerStreamRequest(method.path, serialize as (x: unknown) => Buffer, deserialize, items[0] ?? (raw ? Buffer.alloc(0) : {}), md, options);
          call.on('data', () => streamed++);
          call.on('error', (e: grpc.ServiceError) => finish(e, null));
          call.on('status', (s: grpc.StatusObject) => {
            if (s.code === grpc.status.OK) finish(null, null);
          });
        } else {
          const call = this.client.makeBidiStreamRequest(method.path, serialize as (x: unknown) => Buffer, deserialize, md, options);
          call.on('data', () => streamed++);
          call.on('error', (e: grpc.ServiceError) => finish(e, null));
          call.on('status', (s: grpc.StatusObject) => {
            if (s.code === grpc.status.OK) finish(null, null);
          });
          for (const item of items) call.write(item);
          call.end();
        }
      } catch (error) {
        resolve({ code: -1, details: `client refused: ${(error as Error).message}`, errorCode: '', response: null, streamed });
      }
    });
  }
}

export const STATUS_NAME = new Map<number, string>(Object.entries(grpc.status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]));

export interface GrpcJudgement {
  rule: string;
  status: string;
  code: string;
  detail: string;
}

export function judge(c: GrpcCase, a: GrpcAnswer): GrpcJudgement[] {
  const status = a.code === -1 ? 'CLIENT' : (STATUS_NAME.get(a.code) ?? String(a.code));
  const out: GrpcJudgement[] = [];
  const detail = clip(a.details || (a.response ? JSON.stringify(a.response) : `${a.streamed} message(s)`), 160);
  if (a.code === grpc.status.INTERNAL || a.code === grpc.status.UNKNOWN || a.code === grpc.status.DATA_LOSS) out.push({ rule: `status-${status}`, status, code: a.errorCode || '-', detail });
  if (a.code === grpc.status.DEADLINE_EXCEEDED && a.errorCode !== 'REQUEST_TIMEOUT') out.push({ rule: 'hang (no answer within the deadline)', status, code: a.errorCode || '-', detail });
  // The proto's contract: a failed call carries its machine-readable code as trailing metadata
  // (transport-level refusals by grpc-js itself cannot).
  const transportLevel = [grpc.status.OK, grpc.status.CANCELLED, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE, -1].includes(a.code) || /^Received message larger than max/.test(a.details);
  if (!transportLevel && !a.errorCode && !out.length) out.push({ rule: 'no error-code trailer', status, code: '-', detail });
  if (a.errorDetails !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(a.errorDetails);
    } catch {
      parsed = undefined;
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) out.push({ rule: 'error-details trailer is not a JSON object', status, code: a.errorCode || '-', detail: clip(a.errorDetails, 120) });
  }
  if (a.code !== grpc.status.OK && LEAK.test(`${a.details} ${a.errorDetails ?? ''}`)) out.push({ rule: 'internals in the error (stack, SQL, paths)', status, code: a.errorCode || '-', detail });
  if (a.code === grpc.status.OK) {
    if (c.expect === 'fail') out.push({ rule: `accepted-invalid (${c.fatal.join(',')})`, status, code: '-', detail });
    else if (c.expect === 'fail-or-store-nothing' && a.response && (Number(a.response.stored ?? 0) + Number(a.response.updated ?? 0)) > 0) {
      out.push({ rule: 'stored-invalid-item', status, code: '-', detail });
    }
  }
  return out;
}
