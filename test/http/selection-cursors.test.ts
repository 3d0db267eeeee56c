import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fnv1a32, Rng } from '../../src/core/random.js';
import { startService, type RunningService } from '../../src/server.js';
import type { ServiceContext } from '../../src/service/context.js';
import { createDataset, deleteDataset, getDataset } from '../../src/service/datasets.js';
import { PrototypeCache } from '../../src/service/prototype-cache.js';
import { requestRefit } from '../../src/service/refit.js';
import { selectItems, STORED_SELECTIONS_PER_DATASET, type SelectionRequest } from '../../src/service/selection.js';
import { ApiClient } from '../grpc/client.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters, randomUnitRows } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';
import { ingestItems } from '../../src/service/ingest.js';

const DIM = 8;
const N = 300;

/** A second service process on the database of `h` (what another replica is): own HTTP, gRPC, job worker and caches. */
async function startReplica(h: ApiHarness, env: Partial<RunningService['config']['api']> = {}): Promise<{ service: RunningService; close(): Promise<void> }> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-replica-'));
  const config = h.service.config;
  const service = await startService({ ...config, api: { ...config.api, ...env }, dataDir }, silentLogger);
  return {
    service,
    async close() {
      await service.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Creates `name` with `n` planted items (ids `${prefix}-0000`…) and fits its prototypes. */
async function seedDataset(ctx: ServiceContext, name: string, n: number, prefix: string, seed: number): Promise<void> {
  await createDataset(ctx, { name, dimension: DIM, k: 4, settings: { minItemsForFit: 100_000, autoRefit: false } });
  await ingestMore(ctx, name, n, prefix, seed);
  const job = await requestRefit(ctx, name);
  expect((await waitForJob(ctx.db, job.id)).state).toBe('succeeded');
}

async function ingestMore(ctx: ServiceContext, name: string, n: number, prefix: string, seed: number): Promise<void> {
  const data = plantedClusters({ seed, clusters: 4, perCluster: Math.ceil(n / 4), dim: DIM, noise: 0.4 });
  const items = Array.from({ length: n }, (_, i) => ({ externalId: `${prefix}-${String(i).padStart(4, '0')}`, embedding: data.points.subarray(i * DIM, (i + 1) * DIM) }));
  await ingestItems(ctx, name, items);
}

/** Items far from every prototype (uniformly random directions): they rank among the hardest. */
async function ingestOutliers(ctx: ServiceContext, name: string, n: number, prefix: string, seed: number): Promise<void> {
  const points = randomUnitRows(new Rng(seed), n, DIM);
  await ingestItems(ctx, name, Array.from({ length: n }, (_, i) => ({ externalId: `${prefix}-${i}`, embedding: points.subarray(i * DIM, (i + 1) * DIM) })));
}

interface PageBody {
  prototypeVersion: number;
  total: number;
  size: number;
  externalIds: string[];
  nextCursor: string | null;
}

type Query = Record<string, string | number>;

async function getPage(service: RunningService, key: string, dataset: string, query: Query, cursor?: string | null, status = 200): Promise<request.Response> {
  return request(service.http.server)
    .get(`/v1/datasets/${dataset}/selection`)
    .query({ ...query, ...(cursor ? { cursor } : {}) })
    .set('authorization', bearer(key))
    .expect(status);
}

/** Follows nextCursor to the end, page i served by `servers[i % servers.length]`, `between(i)` run before page i > 0. */
async function pageThrough(servers: RunningService[], key: string, dataset: string, query: Query, between?: (page: number) => Promise<void>): Promise<{ ids: string[]; pages: PageBody[] }> {
  const ids: string[] = [];
  const pages: PageBody[] = [];
  let cursor: string | null = null;
  for (let i = 0; i === 0 || cursor; i++) {
    if (i > 0) await between?.(i);
    const body = (await getPage(servers[i % servers.length], key, dataset, query, cursor)).body as PageBody;
    pages.push(body);
    ids.push(...body.externalIds);
    cursor = body.nextCursor;
    if (i > 1000) throw new Error('paging does not end');
  }
  return { ids, pages };
}

const asRequest = (q: Query): SelectionRequest => ({ order: q.order as SelectionRequest['order'], fraction: q.fraction as number | undefined, count: q.count as number | undefined, seed: q.seed as number | undefined });

async function storedSelections(service: RunningService): Promise<number> {
  const [row] = await service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM selections');
  return row.n;
}

describe.each(BACKENDS)('selection cursors on the $name backend', (backend) => {
  let h: ApiHarness;
  let ctx: ServiceContext;
  const q: Query = { order: 'hardest', fraction: 0.5, limit: 40 };

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    ctx = h.service.services.ctx;
  });
  afterAll(async () => {
    await h?.close();
  });

  it('pins the item set of the first page: items ingested between pages neither repeat nor go missing', async () => {
    await seedDataset(ctx, 'grow', N, 'g', 1);
    const expected = await selectItems(ctx, 'grow', asRequest(q));
    const { ids, pages } = await pageThrough([h.service], h.keys.reader, 'grow', q, (i) => ingestOutliers(ctx, 'grow', 30, `late${i}`, 100 + i));
    expect(pages.length).toBe(4);
    expect(ids).toEqual(expected.externalIds);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of pages) expect(p).toMatchObject({ prototypeVersion: expected.version, total: N, size: N / 2 });
    // The dataset did change: a selection now is another one (so this test can fail).
    const now = await selectItems(ctx, 'grow', asRequest(q));
    expect(now.externalIds).not.toEqual(expected.externalIds);
    expect(now.externalIds.some((id) => id.startsWith('late'))).toBe(true);
  });

  it('keeps cursors working across a refit: later pages come from the version the first page used', async () => {
    await seedDataset(ctx, 'refit', N, 'r', 2);
    const before = await selectItems(ctx, 'refit', asRequest(q));
    const { ids, pages } = await pageThrough([h.service], h.keys.reader, 'refit', q, async (i) => {
      if (i !== 2) return;
      await ingestOutliers(ctx, 'refit', 60, 'shift', 7);
      const job = await requestRefit(ctx, 'refit');
      expect((await waitForJob(ctx.db, job.id)).state).toBe('succeeded');
      expect((await getDataset(ctx, 'refit')).activeVersion).toBe(before.version + 1);
    });
    expect(ids).toEqual(before.externalIds);
    expect(pages.map((p) => p.prototypeVersion)).toEqual(pages.map(() => before.version));
    // A new first page uses the new version.
    const fresh = (await getPage(h.service, h.keys.reader, 'refit', q)).body as PageBody;
    expect(fresh.prototypeVersion).toBe(before.version + 1);
  });

  it('skips items deleted since the first page and fills the page from further on', async () => {
    await seedDataset(ctx, 'shrink', N, 's', 3);
    const expected = await selectItems(ctx, 'shrink', asRequest(q));
    const first = (await getPage(h.service, h.keys.reader, 'shrink', q)).body as PageBody;
    expect(first.externalIds).toEqual(expected.externalIds.slice(0, 40));
    const gone = [expected.externalIds[45], expected.externalIds[50], expected.externalIds[79]];
    for (const id of gone) await request(h.service.http.server).delete(`/v1/datasets/shrink/items/${id}`).set('authorization', bearer(h.keys.writer)).expect(204);
    const second = (await getPage(h.service, h.keys.reader, 'shrink', q, first.nextCursor)).body as PageBody;
    const remaining = expected.externalIds.filter((id) => !gone.includes(id));
    expect(second.externalIds).toEqual(remaining.slice(40, 80));
    const rest = await (async () => {
      const ids: string[] = [];
      let cursor = second.nextCursor;
      while (cursor) {
        const body = (await getPage(h.service, h.keys.reader, 'shrink', q, cursor)).body as PageBody;
        ids.push(...body.externalIds);
        cursor = body.nextCursor;
      }
      return ids;
    })();
    expect([...first.externalIds, ...second.externalIds, ...rest]).toEqual(remaining);
  });

  it('answers 409 CURSOR_STALE for an expired stored selection, in the error shape', async () => {
    await seedDataset(ctx, 'expire', N, 'e', 4);
    const first = (await getPage(h.service, h.keys.reader, 'expire', q)).body as PageBody;
    expect(first.nextCursor).toEqual(expect.any(String));
    await h.service.db.query(`UPDATE selections SET expires_at = now() - interval '1 second'`);
    const stale = await getPage(h.service, h.keys.reader, 'expire', q, first.nextCursor, 409);
    expect(stale.body).toEqual({ error: { code: 'CURSOR_STALE', message: expect.stringContaining('start again'), details: { reason: 'expired' } } });
    // Starting again works, and the expired rows are swept when the next selection is stored.
    const again = (await getPage(h.service, h.keys.reader, 'expire', q)).body as PageBody;
    expect(again.externalIds).toEqual(first.externalIds);
    const [row] = await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM selections WHERE expires_at < now()');
    expect(row.n).toBe(0);
    await getPage(h.service, h.keys.reader, 'expire', q, again.nextCursor, 200);
  });

  it('after a dataset is deleted and created again under its name: fresh pages are right, old cursors are stale', async () => {
    await seedDataset(ctx, 'again', N, 'old', 5);
    const old = await pageThrough([h.service], h.keys.reader, 'again', q);
    const midway = (await getPage(h.service, h.keys.reader, 'again', q)).body as PageBody;
    expect(old.ids.every((id) => id.startsWith('old-'))).toBe(true);

    await deleteDataset(ctx, 'again');
    const gone = await getPage(h.service, h.keys.reader, 'again', q, midway.nextCursor, 404);
    expect(gone.body.error.code).toBe('DATASET_NOT_FOUND');
    await seedDataset(ctx, 'again', N, 'new', 6);

    const stale = await getPage(h.service, h.keys.reader, 'again', q, midway.nextCursor, 409);
    expect(stale.body.error).toMatchObject({ code: 'CURSOR_STALE', details: { reason: 'dataset_recreated' } });
    const expected = await selectItems(ctx, 'again', asRequest(q));
    const fresh = await pageThrough([h.service], h.keys.reader, 'again', q);
    expect(fresh.ids).toEqual(expected.externalIds);
    expect(fresh.ids.every((id) => id.startsWith('new-'))).toBe(true);
    for (const p of fresh.pages) expect(p.externalIds.length).toBeGreaterThan(0);
  });

  it('stores nothing for a one-page selection, stores an unchanged selection once, and keeps a bounded number per dataset', async () => {
    await seedDataset(ctx, 'store', N, 'st', 8);
    const before = await storedSelections(h.service);
    const one = (await getPage(h.service, h.keys.reader, 'store', { order: 'easiest', count: 10, limit: 10 })).body as PageBody;
    expect(one.nextCursor).toBeNull();
    expect(one.externalIds).toHaveLength(10);
    expect(await storedSelections(h.service)).toBe(before);

    const a = (await getPage(h.service, h.keys.reader, 'store', q)).body as PageBody;
    const b = (await getPage(h.service, h.keys.reader, 'store', q)).body as PageBody;
    expect(await storedSelections(h.service)).toBe(before + 1);
    expect(b.nextCursor).toBe(a.nextCursor);

    // Distinct selections (random order, other seeds): only the most recently used few stay.
    const cursors: string[] = [];
    for (let seed = 0; seed < STORED_SELECTIONS_PER_DATASET + 3; seed++) {
      cursors.push(((await getPage(h.service, h.keys.reader, 'store', { order: 'random', fraction: 0.5, limit: 40, seed })).body as PageBody).nextCursor!);
    }
    const dataset = await getDataset(ctx, 'store');
    const [row] = await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM selections WHERE dataset_id = $1', [dataset.id]);
    expect(row.n).toBe(STORED_SELECTIONS_PER_DATASET);
    const evicted = await getPage(h.service, h.keys.reader, 'store', { order: 'random', fraction: 0.5, limit: 40, seed: 0 }, cursors[0], 409);
    expect(evicted.body.error.code).toBe('CURSOR_STALE');
    await getPage(h.service, h.keys.reader, 'store', { order: 'random', fraction: 0.5, limit: 40, seed: STORED_SELECTIONS_PER_DATASET + 2 }, cursors.at(-1), 200);
    // item_ids is stored out of line and uncompressed (substring reads only its chunks).
    const [attr] = await h.service.db.query<{ storage: string }>(`SELECT attstorage AS storage FROM pg_attribute WHERE attrelid = 'selections'::regclass AND attname = 'item_ids'`);
    expect(attr.storage).toBe('e');
  });

  it('refuses a cursor of other parameters (400) and one of the earlier, version-pinning format (409)', async () => {
    await seedDataset(ctx, 'fmt', N, 'f', 9);
    const first = (await getPage(h.service, h.keys.reader, 'fmt', q)).body as PageBody;
    const other = await getPage(h.service, h.keys.reader, 'fmt', { ...q, fraction: 0.4 }, first.nextCursor, 400);
    expect(other.body.error.code).toBe('INVALID_CURSOR');
    const hash = String(fnv1a32(JSON.stringify(['fmt', 'hardest', 0.5, null, 'none', 0, null, null])));
    const legacy = Buffer.from(JSON.stringify({ v: 1, o: 40, h: hash })).toString('base64url');
    const stale = await getPage(h.service, h.keys.reader, 'fmt', q, legacy, 409);
    expect(stale.body.error).toMatchObject({ code: 'CURSOR_STALE', details: { reason: 'legacy' } });
    const forged = Buffer.from(JSON.stringify({ s: '00000000-0000-4000-8000-000000000000', o: 40, h: hash })).toString('base64url');
    expect((await getPage(h.service, h.keys.reader, 'fmt', q, forged, 409)).body.error.code).toBe('CURSOR_STALE');
    const notUuid = Buffer.from(JSON.stringify({ s: "x'; --", o: 40, h: hash })).toString('base64url');
    expect((await getPage(h.service, h.keys.reader, 'fmt', q, notUuid, 400)).body.error.code).toBe('INVALID_CURSOR');
    const { s } = JSON.parse(Buffer.from(first.nextCursor!, 'base64url').toString('utf8')) as { s: string };
    const far = Buffer.from(JSON.stringify({ s, o: 2 ** 40, h: hash })).toString('base64url');
    expect((await getPage(h.service, h.keys.reader, 'fmt', q, far, 400)).body.error.code).toBe('INVALID_CURSOR');
    const pastEnd = Buffer.from(JSON.stringify({ s, o: 10_000, h: hash })).toString('base64url');
    expect((await getPage(h.service, h.keys.reader, 'fmt', q, pastEnd)).body).toMatchObject({ externalIds: [], nextCursor: null, size: N / 2 });
  });

  it('shares one rate budget between REST and gRPC', async () => {
    const limited = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '4' });
    const client = new ApiClient(limited.service.grpc.port, limited.keys.reader);
    try {
      const rest = () => request(limited.service.http.server).get('/v1/datasets').set('authorization', bearer(limited.keys.reader));
      await rest().expect(200);
      await client.unary('ListDatasets', {});
      await rest().expect(200);
      await client.unary('ListDatasets', {});
      const refused = await rest().expect(429);
      expect(refused.body.error.code).toBe('RATE_LIMITED');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      const grpcRefused = await client.fails('ListDatasets', {});
      expect(grpcRefused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(grpcRefused.errorCode).toBe('RATE_LIMITED');
      // Another key has its own budget.
      await request(limited.service.http.server).get('/v1/datasets').set('authorization', bearer(limited.keys.admin)).expect(200);
    } finally {
      client.raw.close();
      await limited.close();
    }
  });

  it('keeps at most its byte budget of prototype sets, evicting the least recently used', async () => {
    await seedDataset(ctx, 'cache-a', 100, 'ca', 10);
    await seedDataset(ctx, 'cache-b', 100, 'cb', 11);
    const [a, b] = [await getDataset(ctx, 'cache-a'), await getDataset(ctx, 'cache-b')];
    const oneSet = 4 * DIM * 4 * 2 + 4 * 4; // centroids + fit centroids (float32) + counts (int32)
    const cache = new PrototypeCache(oneSet);
    const setA = await cache.get(ctx.db, a.id, a.activeVersion!, DIM);
    expect(cache.size).toBe(1);
    await cache.get(ctx.db, b.id, b.activeVersion!, DIM);
    expect(cache.size).toBe(1);
    const again = await cache.get(ctx.db, a.id, a.activeVersion!, DIM);
    expect(again).not.toBe(setA); // reloaded after eviction
    expect(Array.from(again.centroids)).toEqual(Array.from(setA.centroids));
  });
});

// Several replicas on one database: only the native backend has more than one process.
describe.each(NATIVE_URL ? BACKENDS.filter((b) => b.name === 'native') : [])('two service instances on one $name database', (backend) => {
  let h: ApiHarness;
  let replica: Awaited<ReturnType<typeof startReplica>>;
  let a: RunningService;
  let b: RunningService;
  const q: Query = { order: 'hardest', fraction: 0.5, limit: 40 };

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    replica = await startReplica(h);
    a = h.service;
    b = replica.service;
  });
  afterAll(async () => {
    await replica?.close();
    await h?.close();
  });

  it('page 1 from A, items ingested, later pages from B and A: exactly the first page’s selection', async () => {
    await seedDataset(a.services.ctx, 'shared', N, 'sh', 21);
    const expected = await selectItems(a.services.ctx, 'shared', asRequest(q));
    const { ids, pages } = await pageThrough([a, b], h.keys.reader, 'shared', q, (i) => ingestOutliers(i % 2 ? b.services.ctx : a.services.ctx, 'shared', 40, `late${i}`, 200 + i));
    expect(pages.length).toBe(4);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expected.externalIds);
    for (const p of pages) expect(p).toMatchObject({ prototypeVersion: expected.version, total: N, size: N / 2 });
    // B, asked afresh, sees the grown dataset: the cursor, not the replica, decided the pages.
    const now = await selectItems(b.services.ctx, 'shared', asRequest(q));
    expect(now.externalIds).not.toEqual(expected.externalIds);
  });

  it('a dataset deleted and created again on A pages correctly on B, never in empty pages', async () => {
    await seedDataset(a.services.ctx, 'reborn', N, 'old', 22);
    // B serves the old dataset first (anything B might cache about it is warm now).
    const old = await pageThrough([b], h.keys.reader, 'reborn', q);
    expect(old.ids.length).toBe(N / 2);
    const midway = (await getPage(b, h.keys.reader, 'reborn', q)).body as PageBody;
    await b.services.ctx.prototypes.get(b.db, (await getDataset(b.services.ctx, 'reborn')).id, 1, DIM);

    await deleteDataset(a.services.ctx, 'reborn');
    await seedDataset(a.services.ctx, 'reborn', N, 'new', 23);

    const stale = await getPage(b, h.keys.reader, 'reborn', q, midway.nextCursor, 409);
    expect(stale.body.error).toMatchObject({ code: 'CURSOR_STALE', details: { reason: 'dataset_recreated' } });

    const expected = await selectItems(a.services.ctx, 'reborn', asRequest(q));
    const fresh = await pageThrough([b, a], h.keys.reader, 'reborn', q);
    expect(fresh.ids).toEqual(expected.externalIds);
    expect(fresh.ids.every((id) => id.startsWith('new-'))).toBe(true);
    expect(fresh.pages.map((p) => p.externalIds.length)).toEqual([40, 40, 40, 30]);
    // Storing the new selection swept the deleted dataset's rows: the old cursor stays stale.
    expect((await getPage(b, h.keys.reader, 'reborn', q, midway.nextCursor, 409)).body.error).toMatchObject({ code: 'CURSOR_STALE', details: { reason: 'expired' } });
  });

  it('a prototype cache never serves another replica’s superseded centroids', async () => {
    await seedDataset(a.services.ctx, 'protos', N, 'p', 24);
    const dataset = await getDataset(b.services.ctx, 'protos');
    const seen = await b.services.ctx.prototypes.get(b.db, dataset.id, dataset.activeVersion!, DIM);
    await ingestOutliers(a.services.ctx, 'protos', 20, 'moved', 25); // a mini-batch update on A
    const now = await b.services.ctx.prototypes.get(b.db, dataset.id, dataset.activeVersion!, DIM);
    expect(now.revision).toBe(seen.revision + 1);
    const onA = await a.services.ctx.prototypes.get(a.db, dataset.id, dataset.activeVersion!, DIM);
    expect(Array.from(now.centroids)).toEqual(Array.from(onA.centroids));
    expect(Array.from(now.centroids)).not.toEqual(Array.from(seen.centroids));
  });

  it('spends one rate budget across replicas and transports', async () => {
    const limitedA = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '5' });
    const limitedB = await startReplica(limitedA);
    const grpcA = new ApiClient(limitedA.service.grpc.port, limitedA.keys.reader);
    const grpcB = new ApiClient(limitedB.service.grpc.port, limitedA.keys.reader);
    try {
      const rest = (s: RunningService) => request(s.http.server).get('/v1/datasets').set('authorization', bearer(limitedA.keys.reader));
      await rest(limitedA.service).expect(200);
      await rest(limitedB.service).expect(200);
      await grpcA.unary('ListDatasets', {});
      await grpcB.unary('ListDatasets', {});
      await rest(limitedA.service).expect(200);
      // Five spent across two replicas and two transports: the budget is gone everywhere.
      expect((await rest(limitedB.service).expect(429)).body.error.code).toBe('RATE_LIMITED');
      expect((await rest(limitedA.service).expect(429)).body.error.code).toBe('RATE_LIMITED');
      expect((await grpcA.fails('ListDatasets', {})).errorCode).toBe('RATE_LIMITED');
      expect((await grpcB.fails('ListDatasets', {})).errorCode).toBe('RATE_LIMITED');
      const [row] = await limitedA.service.db.query<{ count: number }>(`SELECT count FROM rate_windows WHERE key LIKE 'key:%'`);
      expect(row.count).toBeGreaterThanOrEqual(6);
    } finally {
      grpcA.raw.close();
      grpcB.raw.close();
      await limitedB.close();
      await limitedA.close();
    }
  });
});
