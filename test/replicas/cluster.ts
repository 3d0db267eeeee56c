import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PROJECT_ROOT } from '../../src/paths.js';
import { adminQuery, NATIVE_URL, urlWithSchema } from '../helpers/backends.js';
import { freePort, isRunning, killGroup, launchService, logLines, waitUntilReady, type Running } from '../helpers/process.js';

/**
 * Three (or more) real service processes sharing one fresh schema of the native test database —
 * what a deployment behind a load balancer looks like. Each has its own DATA_DIR and ports; their
 * database connections carry `application_name=<tag>-r<i>` (set in DATABASE_URL, which pg lets
 * override the pool's own name), so the harness can tell its backends from anyone else's in
 * pg_stat_activity and the Postgres log.
 */

export const JOB_STALE_MS = 3000;
export const JOB_POLL_MS = 100;

/** Where each scenario's replica logs and summary are written (kept after the run for debugging). */
export const ARTIFACTS_DIR = path.join(tmpdir(), 'protoprune-replicas');

export type ReplicaState = 'up' | 'killed' | 'paused' | 'stopped';

export interface Replica {
  name: string;
  index: number;
  port: number;
  base: string;
  dataDir: string;
  running: Running;
  state: ReplicaState;
  /** Whether load clients may send new requests to it (false while draining / paused / dead). */
  routable: boolean;
  /** When it was SIGKILLed (ms epoch), for judging client errors. */
  killedAt: number | null;
  /** A SIGSTOP… SIGCONT interval (ms epoch). */
  pausedAt: number | null;
  resumedAt: number | null;
}

export interface Cluster {
  tag: string;
  schema: string;
  replicas: Replica[];
  /** The admin key minted at first boot (DATA_DIR/initial-admin-key of r1, else of the replica that minted it). */
  adminKey: string;
  /** How many replicas minted an initial admin key (more than one: they raced at boot). */
  mintedKeys: number;
  /** SQL against the scenario's schema (search_path set), through the harness's own small pool. */
  sql<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
  /** Backend pids the replicas' connections had, sampled every 250 ms (for attributing log lines). */
  backendPids: Set<number>;
  /** Writes every replica's stdout/stderr under ARTIFACTS_DIR/<scenario>/ and returns that folder. */
  saveLogs(scenario: string): string;
  stop(): Promise<void>;
}

function replicaEnv(opts: { port: number; grpcPort: number; url: string; dataDir: string; extra?: Record<string, string> }): Record<string, string> {
  return {
    HOST: '127.0.0.1',
    PORT: String(opts.port),
    GRPC_PORT: String(opts.grpcPort),
    DATABASE_URL: opts.url,
    DATA_DIR: opts.dataDir,
    LOG_LEVEL: 'info',
    JOB_POLL_MS: String(JOB_POLL_MS),
    JOB_STALE_MS: String(JOB_STALE_MS),
    // One API key drives 20+ clients: the per-key limit would only measure itself.
    RATE_LIMIT_PER_MINUTE: '0',
    // 3 processes on 2 shared cores.
    KERNEL_THREADS: '1',
    EMBEDDING_THREADS: '1',
    SHUTDOWN_GRACE_MS: '2000',
    // The service always loads its image encoder at boot; every replica shares the repository's
    // converted model (read-only), so nothing is converted or downloaded.
    MODELS_DIR: path.join(PROJECT_ROOT, 'models'),
    ...opts.extra,
  };
}

async function waitForFile(file: string, running: Running, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(file)) {
      const text = readFileSync(file, 'utf8').trim();
      if (text) return text;
    }
    if (running.child.exitCode !== null) throw new Error(`replica exited before writing ${file}:\n${running.stderr()}\n${running.stdout().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${file} not written in ${timeoutMs} ms`);
}

/** Clusters not stopped yet: a test that timed out leaves its cluster here for afterEach to stop. */
export const LIVE_CLUSTERS = new Set<Cluster>();

export async function startCluster(options: { scenario: string; replicas?: number; env?: Record<string, string> }): Promise<Cluster> {
  if (!NATIVE_URL) throw new Error('TEST_DATABASE_URL is not set');
  const count = options.replicas ?? 3;
  const suffix = randomBytes(4).toString('hex');
  const schema = `replicas_${options.scenario}_${suffix}`;
  const tag = `rp${suffix}`;
  await adminQuery(`CREATE SCHEMA "${schema}"`);
  const pool = new pg.Pool({ connectionString: NATIVE_URL, max: 3, options: `-c search_path="${schema}",public -c statement_timeout=30000`, application_name: 'replica-harness' });
  pool.on('error', () => undefined);

  const replicas: Replica[] = [];
  const backendPids = new Set<number>();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        const rows = await pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1', [`${tag}-r%`]);
        for (const r of rows.rows) backendPids.add(r.pid);
      } catch {
        // the database is busy or going away: the next sample catches up
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const launch = async (index: number): Promise<Replica> => {
    const [port, grpcPort] = [await freePort(), await freePort()];
    const dataDir = await mkdtemp(path.join(tmpdir(), `protoprune-replica-${options.scenario}-r${index}-`));
    const url = new URL(urlWithSchema(NATIVE_URL!, schema));
    url.searchParams.set('application_name', `${tag}-r${index}`);
    const running = launchService(replicaEnv({ port, grpcPort, url: url.toString(), dataDir, extra: options.env }));
    const replica: Replica = {
      name: `r${index}`,
      index,
      port,
      base: `http://127.0.0.1:${port}`,
      dataDir,
      running,
      state: 'up',
      routable: true,
      killedAt: null,
      pausedAt: null,
      resumedAt: null,
    };
    replicas.push(replica);
    return replica;
  };

  let cluster: Cluster | undefined;
  let stopping: Promise<void> | undefined;
  let mintedKeys = 0;
  try {
    // All replicas boot at once, as a deployment rolls them out: they race to migrate the empty
    // schema (serialised by the migration lock) and to mint the initial admin key. The key is read
    // from the first replica's DATA_DIR — or, if another replica won that race, from that one's.
    for (let i = 1; i <= count; i++) await launch(i);
    await Promise.all(replicas.map((r) => waitUntilReady(r.port, r.running, 120_000)));
    const minted = replicas.map((r) => path.join(r.dataDir, 'initial-admin-key')).filter((file) => existsSync(file));
    if (minted.length === 0) throw new Error('no replica wrote DATA_DIR/initial-admin-key');
    const adminKey = await waitForFile(minted[0], replicas[0].running, 5000);
    mintedKeys = minted.length;
    cluster = {
      tag,
      schema,
      replicas,
      adminKey,
      mintedKeys,
      backendPids,
      async sql<Row>(text: string, params: unknown[] = []) {
        return (await pool.query(text, params)).rows as Row[];
      },
      saveLogs(scenario: string) {
        const dir = path.join(ARTIFACTS_DIR, scenario);
        mkdirSync(dir, { recursive: true });
        for (const r of replicas) {
          writeFileSync(path.join(dir, `${r.name}.stdout.log`), r.running.stdout());
          writeFileSync(path.join(dir, `${r.name}.stderr.log`), r.running.stderr());
        }
        return dir;
      },
      stop: () => (stopping ??= stopAll().finally(() => LIVE_CLUSTERS.delete(cluster!))),
    };
    LIVE_CLUSTERS.add(cluster);
    return cluster;
  } catch (error) {
    await stopAll();
    throw error;
  }

  async function stopAll(): Promise<void> {
    sampling = false;
    await sampler;
    await Promise.all(
      replicas.map(async (r) => {
        if (r.state === 'paused') {
          try {
            process.kill(-r.running.child.pid!, 'SIGCONT');
          } catch {
            // gone
          }
        }
        if (r.running.child.exitCode === null && r.running.child.signalCode === null) {
          r.running.child.kill('SIGTERM');
          const timer = setTimeout(() => killGroup(r.running), 5000);
          await r.running.exited;
          clearTimeout(timer);
        }
        killGroup(r.running);
      }),
    );
    await pool.end().catch(() => undefined);
    if (!process.env.REPLICAS_KEEP_SCHEMA) await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await Promise.all(replicas.map((r) => rm(r.dataDir, { recursive: true, force: true })));
  }
}

/** kill -9 of the replica's whole process group. */
export function killReplica(r: Replica): void {
  r.routable = false;
  r.state = 'killed';
  r.killedAt = Date.now();
  killGroup(r.running);
}

export function pauseReplica(r: Replica): void {
  r.routable = false;
  r.state = 'paused';
  r.pausedAt = Date.now();
  process.kill(-r.running.child.pid!, 'SIGSTOP');
}

export function resumeReplica(r: Replica): void {
  process.kill(-r.running.child.pid!, 'SIGCONT');
  r.state = 'up';
  r.resumedAt = Date.now();
  r.routable = true;
}

export function alive(r: Replica): boolean {
  return r.running.child.exitCode === null && r.running.child.signalCode === null && isRunning(r.running.child.pid!);
}

export type LogLine = Record<string, unknown> & { msg?: string; level?: number; time?: number };

export function replicaLogs(r: Replica): LogLine[] {
  return logLines(r.running.stdout()) as LogLine[];
}

/** The replicas that logged `msg` for job `jobId` (optionally for one attempt), with those lines. */
export function jobLogs(replicas: Replica[], jobId: string, msg?: string): Array<{ replica: Replica; line: LogLine }> {
  const found: Array<{ replica: Replica; line: LogLine }> = [];
  for (const replica of replicas) {
    for (const line of replicaLogs(replica)) {
      if (line.jobId === jobId && (msg === undefined || line.msg === msg)) found.push({ replica, line });
    }
  }
  return found;
}

export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | null | false> | T | undefined | null | false, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
