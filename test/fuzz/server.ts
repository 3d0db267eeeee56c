import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PROJECT_ROOT } from '../../src/paths.js';
import { adminQuery, NATIVE_URL, urlWithSchema } from '../helpers/backends.js';

/**
 * The real service as a child process (`node --import tsx src/main.ts`), on a fresh embedded data
 * directory or a fresh native schema. It can be restarted on the same data after a crash, so one
 * crash does not end the run; every incarnation's output is kept for the log checks.
 */

export type BackendName = 'embedded' | 'native';

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  /** The last lines the process wrote before it died. */
  tail: string;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export class ServiceProcess {
  child!: ChildProcess;
  httpPort = 0;
  grpcPort = 0;
  adminKey = '';
  /** Every line any incarnation wrote (stdout and stderr). */
  private output: string[] = [];
  private partial = '';
  /** Unexpected exits (crashes), in order. */
  readonly exits: Exit[] = [];
  private exitListeners: Array<(e: Exit) => void> = [];
  private stopping = false;
  /** Exits during boot are boot failures (thrown by launch), not crashes. */
  private booted = false;
  private env: Record<string, string> = {};

  private constructor(
    readonly backend: BackendName,
    readonly dataDir: string,
    private readonly cleanupDb: () => Promise<void>,
  ) {}

  static async start(backend: BackendName, env: Record<string, string> = {}): Promise<ServiceProcess> {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-fuzz-'));
    let databaseUrl: string | undefined;
    let cleanupDb = async () => {};
    if (backend === 'native') {
      const schema = `fuzz_${randomBytes(6).toString('hex')}`;
      await adminQuery(`CREATE SCHEMA "${schema}"`);
      databaseUrl = urlWithSchema(NATIVE_URL!, schema);
      cleanupDb = async () => {
        await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      };
    }
    const service = new ServiceProcess(backend, dataDir, cleanupDb);
    service.httpPort = await freePort();
    service.grpcPort = await freePort();
    service.env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      HOST: '127.0.0.1',
      PORT: String(service.httpPort),
      GRPC_PORT: String(service.grpcPort),
      DATA_DIR: dataDir,
      MODELS_DIR: path.join(PROJECT_ROOT, 'models'),
      LOG_LEVEL: 'warn',
      // The budget is not what is being tested: keep it out of the way (but its 429s are valid answers).
      RATE_LIMIT_PER_MINUTE: '10000000',
      // Admission control keeps its default limits, but queued requests wait instead of being shed with
      // 503 SERVER_BUSY when the machine is slow (the fuzzer never sends more than the queue holds).
      ADMISSION_QUEUE_TIMEOUT_MS: '60000',
      JOB_POLL_MS: '50',
      BODY_LIMIT_BYTES: String(1024 * 1024),
      REQUEST_TIMEOUT_MS: '10000',
      SHUTDOWN_GRACE_MS: '2000',
      KERNEL_THREADS: '1',
      EMBEDDING_THREADS: '1',
      ...(databaseUrl ? { DATABASE_URL: databaseUrl, DATABASE_POOL_MAX: '4' } : {}),
      ...env,
    };
    try {
      await service.launch();
    } catch (error) {
      // A free port can be taken between probing and binding: once, with new ports.
      if (!/EADDRINUSE/.test(String(error))) throw error;
      service.httpPort = await freePort();
      service.grpcPort = await freePort();
      Object.assign(service.env, { PORT: String(service.httpPort), GRPC_PORT: String(service.grpcPort) });
      await service.launch();
    }
    service.adminKey = (await readFile(path.join(dataDir, 'initial-admin-key'), 'utf8')).trim();
    return service;
  }

  private async launch(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: PROJECT_ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const onData = (d: Buffer) => {
      const text = this.partial + d.toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      this.output.push(...lines);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code, signal) => {
      if (this.partial) this.output.push(this.partial);
      this.partial = '';
      if (this.stopping || child !== this.child || !this.booted) return;
      const exit: Exit = { code, signal, at: Date.now(), tail: this.output.slice(-12).join('\n') };
      this.exits.push(exit);
      for (const l of this.exitListeners) l(exit);
    });
    this.booted = false;
    await this.waitUntilReady(60_000);
    this.booted = true;
  }

  onExit(listener: (e: Exit) => void): () => void {
    this.exitListeners.push(listener);
    return () => {
      this.exitListeners = this.exitListeners.filter((l) => l !== listener);
    };
  }

  alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts a new incarnation on the same data and ports (after a crash). */
  async restart(): Promise<void> {
    if (this.alive()) {
      this.stopping = true;
      this.child.kill('SIGKILL');
      await new Promise((r) => this.child.once('exit', r));
      this.stopping = false;
    }
    await this.launch();
  }

  async readyz(): Promise<number | null> {
    return fetch(`http://127.0.0.1:${this.httpPort}/readyz`, { signal: AbortSignal.timeout(5000) }).then(
      (r) => r.status,
      () => null,
    );
  }

  private async waitUntilReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.alive()) throw new Error(`service exited during boot:\n${this.output.slice(-30).join('\n')}`);
      // HTTP answers before the gRPC server is bound: wait for both.
      if ((await this.readyz()) === 200 && (await portOpen(this.grpcPort))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`service not ready within ${timeoutMs} ms:\n${this.output.slice(-30).join('\n')}`);
  }

  logLines(): string[] {
    return this.partial ? [...this.output, this.partial] : [...this.output];
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.child && this.alive()) {
      this.child.kill('SIGTERM');
      const exited = new Promise((r) => this.child.once('exit', r));
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await this.cleanupDb().catch(() => undefined);
    await rm(this.dataDir, { recursive: true, force: true });
  }

  /** A well-formed JSON call with the admin key (seeding and fingerprints). */
  async api(method: string, urlPath: string, body?: unknown, key = this.adminKey, accept?: string): Promise<{ status: number; json: any; text: string }> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}${urlPath}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(accept ? { accept } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON (NDJSON, CSV) */
    }
    return { status: res.status, json, text };
  }
}

// ---- the seeded world ------------------------------------------------------------------------

export type KeyRole = 'admin' | 'adminAll' | 'writer' | 'reader' | 'readerMain' | 'writerOther' | 'adminOther' | 'revoked';
export const KEY_SCOPE: Record<KeyRole, 'read' | 'write' | 'admin'> = {
  admin: 'admin',
  adminAll: 'admin',
  writer: 'write',
  reader: 'read',
  readerMain: 'read',
  writerOther: 'write',
  adminOther: 'admin',
  revoked: 'write',
};
/** The datasets a role is limited to (empty: all). */
export const KEY_DATASETS: Record<KeyRole, string[]> = {
  admin: [],
  adminAll: [],
  writer: [],
  reader: [],
  readerMain: ['fz-main'],
  writerOther: ['fz-other'],
  adminOther: ['fz-other'],
  revoked: [],
};

export interface World {
  main: { name: string; dim: number };
  other: { name: string; dim: number };
  /** Item ids the fuzzers use in templates (their data is in the fingerprint). */
  targetIds: string[];
  /** Every external id seeded into fz-main. */
  mainIds: Set<string>;
  jobId: string;
  otherJobId: string;
  keys: Record<KeyRole, string>;
  keyIds: Record<KeyRole, string>;
}

/** A deterministic PRNG for the seeded embeddings (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function clustered(n: number, dim: number, clusters: number, seed: number): number[][] {
  const rand = prng(seed);
  const centres = Array.from({ length: clusters }, () => Array.from({ length: dim }, () => rand() * 2 - 1));
  return Array.from({ length: n }, (_, i) => centres[i % clusters].map((c) => Math.round((c + (rand() - 0.5) * 0.3) * 1e4) / 1e4));
}

async function must(step: string, res: { status: number; json: any; text: string }, ...ok: number[]) {
  if (!ok.includes(res.status)) throw new Error(`seeding failed at ${step}: ${res.status} ${res.text.slice(0, 300)}`);
  return res.json;
}

/** Two fitted embedding datasets, and keys of every kind. */
export async function seed(service: ServiceProcess): Promise<World> {
  const settings = { autoRefit: false, minItemsForFit: 1_000_000, seed: 7 };
  await must('create fz-main', await service.api('POST', '/v1/datasets', { name: 'fz-main', dimension: 8, k: 4, settings }), 201);
  await must('create fz-other', await service.api('POST', '/v1/datasets', { name: 'fz-other', dimension: 4, k: 2, settings }), 201);

  const special = ['id with space', 'ünïcødé-💥', 'slash/inside', 'pct%41', `long-${'x'.repeat(145)}`];
  const mainIds = [...Array.from({ length: 295 }, (_, i) => `item-${String(i).padStart(4, '0')}`), ...special];
  const vectors = clustered(mainIds.length, 8, 4, 1);
  for (let at = 0; at < mainIds.length; at += 100) {
    const items = mainIds.slice(at, at + 100).map((externalId, j) => ({
      externalId,
      embedding: vectors[at + j],
      metadata: { i: at + j, group: `g${(at + j) % 4}`, note: (at + j) % 7 === 0 ? 'ñ 💥 "quoted"' : 'plain' },
    }));
    const r = await must('ingest fz-main', await service.api('POST', '/v1/datasets/fz-main/items', { items }), 200);
    if (r.counts.stored !== items.length) throw new Error(`seeding stored ${JSON.stringify(r.counts)}`);
  }
  const otherVectors = clustered(60, 4, 2, 2);
  await must(
    'ingest fz-other',
    await service.api('POST', '/v1/datasets/fz-other/items', { items: otherVectors.map((embedding, i) => ({ externalId: `o-${i}`, embedding })) }),
    200,
  );

  const jobId = (await must('refit fz-main', await service.api('POST', '/v1/datasets/fz-main/prototypes/refit'), 202)).id as string;
  const otherJobId = (await must('refit fz-other', await service.api('POST', '/v1/datasets/fz-other/prototypes/refit'), 202)).id as string;
  for (const id of [jobId, otherJobId]) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const job = await must('job', await service.api('GET', `/v1/jobs/${id}`), 200);
      if (job.state === 'succeeded') break;
      if (job.state === 'failed' || job.state === 'cancelled' || Date.now() > deadline) throw new Error(`refit ${id} ended ${JSON.stringify(job)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const keys = { admin: service.adminKey } as Record<KeyRole, string>;
  const keyIds = {} as Record<KeyRole, string>;
  const listed = await must('list keys', await service.api('GET', '/v1/keys'), 200);
  keyIds.admin = listed.keys[0].id;
  for (const role of Object.keys(KEY_SCOPE) as KeyRole[]) {
    if (role === 'admin') continue;
    const minted = await must(`mint ${role}`, await service.api('POST', '/v1/keys', { name: `fuzz-${role}`, scopes: [KEY_SCOPE[role]], datasets: KEY_DATASETS[role] }), 201);
    keys[role] = minted.secret;
    keyIds[role] = minted.id;
  }
  await must('revoke', await service.api('DELETE', `/v1/keys/${keyIds.revoked}`), 200);

  return {
    main: { name: 'fz-main', dim: 8 },
    other: { name: 'fz-other', dim: 4 },
    targetIds: ['item-0000', 'item-0001', 'item-0002', 'item-0003', 'item-0100', 'item-0294', ...special],
    mainIds: new Set(mainIds),
    jobId,
    otherJobId,
    keys,
    keyIds,
  };
}

// ---- fingerprint -------------------------------------------------------------------------------

const sha = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

/**
 * What the fuzzing must not change: the datasets (with settings, versions, timestamps), per dataset
 * the counts, prototypes and a hash of the full selection export, the template items in full, and
 * the API keys (without last-used times, which reads legitimately update).
 */
export async function fingerprint(service: ServiceProcess, world: World): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const datasets = await service.api('GET', '/v1/datasets');
  const list = (datasets.json?.datasets ?? []) as Array<Record<string, unknown>>;
  out['datasets'] = `${datasets.status} ${list.map((d) => d.name).sort().join(',')}`;
  for (const d of list) {
    const name = String(d.name);
    const seg = encodeURIComponent(name);
    out[`dataset ${name}`] = sha(JSON.stringify(d));
    const stats = await service.api('GET', `/v1/datasets/${seg}/stats`);
    const s = stats.json ?? {};
    out[`stats ${name}`] = `${stats.status} items=${s.itemCount} scored=${s.scoredCount} version=${s.prototypeVersion} k=${s.k} clusters=${JSON.stringify(s.clusterSizes)} refitJob=${s.refitJob?.id ?? null}`;
    const protos = await service.api('GET', `/v1/datasets/${seg}/prototypes`);
    const p = protos.json ?? {};
    out[`prototypes ${name}`] = `${protos.status} v=${p.version} rev=${p.revision} fit=${p.fitItems} since=${p.itemsSinceFit} drift=${JSON.stringify(p.drift)}`;
    const selection = await service.api('GET', `/v1/datasets/${seg}/selection?order=hardest&fraction=1&format=ndjson`, undefined, service.adminKey, 'application/x-ndjson');
    out[`selection ${name}`] = `${selection.status} lines=${selection.text.split('\n').filter(Boolean).length} sha=${sha(selection.text)}`;
  }
  for (const id of world.targetIds) {
    const item = await service.api('GET', `/v1/datasets/fz-main/items/${encodeURIComponent(id)}`);
    out[`item ${id.slice(0, 40)}`] = `${item.status} ${sha(item.text)}`;
  }
  const keys = await service.api('GET', '/v1/keys');
  const keyList = ((keys.json?.keys ?? []) as Array<Record<string, unknown>>).map(({ lastUsedAt: _ignored, ...rest }) => rest);
  out['keys'] = `${keys.status} n=${keyList.length} sha=${sha(JSON.stringify(keyList.sort((a, b) => String(a.id).localeCompare(String(b.id)))))}`;
  return out;
}

export function diffFingerprints(before: Record<string, string>, after: Record<string, string>): string[] {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  return keys.filter((k) => before[k] !== after[k]).map((k) => `${k}: ${before[k] ?? '(absent)'} → ${after[k] ?? '(absent)'}`);
}
