import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENERATED_TYPES, generateClientTypes } from '../../clients/typescript/scripts/generate.js';
import { createClient, encodeEmbeddingFrames, ProtopruneError, type operations, type ProtopruneClient, type ScoreRow } from '../../clients/typescript/src/index.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { BACKENDS } from '../helpers/backends.js';
import { freePort } from '../helpers/process.js';
import { plantedClusters } from '../helpers/planted.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';

/**
 * Every operation of the API by its operationId: the method and path generated clients call.
 * Typed by the generated `operations`, so a route added, renamed or dropped without regenerating
 * the client fails to compile; the test below compares it with openapi/openapi.json.
 */
const OPERATIONS: Record<keyof operations, string> = {
  getLiveness: 'get /healthz',
  getReadiness: 'get /readyz',
  listDatasets: 'get /v1/datasets',
  createDataset: 'post /v1/datasets',
  getDataset: 'get /v1/datasets/{dataset}',
  deleteDataset: 'delete /v1/datasets/{dataset}',
  ingestItems: 'post /v1/datasets/{dataset}/items',
  findExistingItems: 'post /v1/datasets/{dataset}/items/existing',
  getItem: 'get /v1/datasets/{dataset}/items/{externalId}',
  deleteItem: 'delete /v1/datasets/{dataset}/items/{externalId}',
  getItemThumbnail: 'get /v1/datasets/{dataset}/items/{externalId}/thumbnail',
  selectItems: 'get /v1/datasets/{dataset}/selection',
  scoreItems: 'post /v1/datasets/{dataset}/score',
  getPrototypes: 'get /v1/datasets/{dataset}/prototypes',
  requestRefit: 'post /v1/datasets/{dataset}/prototypes/refit',
  getJob: 'get /v1/jobs/{id}',
  getDatasetStats: 'get /v1/datasets/{dataset}/stats',
  requestDedup: 'post /v1/datasets/{dataset}/duplicates/jobs',
  listDuplicates: 'get /v1/datasets/{dataset}/duplicates',
  exportScores: 'get /v1/datasets/{dataset}/scores',
  listManifests: 'get /v1/datasets/{dataset}/manifests',
  createManifest: 'post /v1/datasets/{dataset}/manifests',
  getManifest: 'get /v1/manifests/{id}',
  deleteManifest: 'delete /v1/manifests/{id}',
  listApiKeys: 'get /v1/keys',
  createApiKey: 'post /v1/keys',
  revokeApiKey: 'delete /v1/keys/{id}',
};

describe('generated TypeScript client', () => {
  it('clients/typescript/src/openapi.d.ts is what openapi-typescript generates (run `npm run client:generate` after `npm run openapi`)', async () => {
    expect(await readFile(GENERATED_TYPES, 'utf8')).toBe(await generateClientTypes());
  });

  it('names every operation of openapi/openapi.json by a stable operationId', async () => {
    const document = JSON.parse(await readFile(path.join(PROJECT_ROOT, 'openapi', 'openapi.json'), 'utf8')) as {
      paths: Record<string, Record<string, { operationId: string }>>;
    };
    const inDocument = Object.fromEntries(
      Object.entries(document.paths).flatMap(([route, methods]) => Object.entries(methods).map(([method, operation]) => [operation.operationId, `${method} ${route}`])),
    );
    expect(inDocument).toEqual(OPERATIONS);
  });
});

const DIM = 8;
const N = 240;

describe.each(BACKENDS)('TypeScript client against the $name backend', (backend) => {
  let h: ApiHarness;
  let client: ProtopruneClient;
  let baseUrl: string;
  const data = plantedClusters({ seed: 5, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.3 });
  const ids = Array.from({ length: N }, (_, i) => `item-${String(i).padStart(3, '0')}`);
  const metadataOf = (i: number) => ({ split: i % 2 === 0 ? 'train' : 'test', i });

  beforeAll(async () => {
    h = await startApi(backend);
    baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    client = createClient({ baseUrl, apiKey: h.keys.admin });
    await client.createDataset({ name: 'emb', dimension: DIM, settings: { minItemsForFit: 1_000_000 } });
    const result = await client.ingestEmbeddings('emb', {
      externalIds: ids,
      vectors: data.points,
      dimension: DIM,
      metadata: ids.map((_, i) => metadataOf(i)),
    });
    expect(result.counts).toEqual({ stored: N, updated: 0, failed: 0 });
    const refit = await client.waitForJob((await client.requestRefit('emb')).id, { intervalMs: 50 });
    expect(refit.state).toBe('succeeded');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('creates, lists, reads and deletes datasets; errors carry status, code and message', async () => {
    const created = await client.createDataset({ name: 'scratch', dimension: 3 });
    expect(created).toMatchObject({ name: 'scratch', dimension: 3, model: null, activeVersion: null });
    expect((await client.listDatasets()).map((d) => d.name).sort()).toEqual(['emb', 'scratch']);
    const conflict = await client.createDataset({ name: 'scratch', dimension: 3 }).catch((e: unknown) => e);
    expect(conflict).toBeInstanceOf(ProtopruneError);
    expect(conflict).toMatchObject({ status: 409, code: 'DATASET_EXISTS', retryAfterMs: null });
    await client.deleteDataset('scratch');
    const missing = (await client.getDataset('scratch').catch((e: unknown) => e)) as ProtopruneError;
    expect([missing.status, missing.code]).toEqual([404, 'DATASET_NOT_FOUND']);
    expect(missing.message).toContain('scratch');
    const invalid = (await client.createDataset({ name: 'bad name!', dimension: 3 }).catch((e: unknown) => e)) as ProtopruneError;
    expect([invalid.status, invalid.code, invalid.details.field]).toEqual([400, 'VALIDATION_FAILED', 'body/name']);
    const anonymous = (await createClient({ baseUrl }).listDatasets().catch((e: unknown) => e)) as ProtopruneError;
    expect([anonymous.status, anonymous.code]).toEqual([401, 'MISSING_API_KEY']);
  });

  it('stores binary float32 embeddings bit for bit, replaces on re-send, and reports a wholly refused batch item by item', async () => {
    const stored = await h.service.db.query<{ embedding: string }>(
      "SELECT i.embedding::text AS embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'emb' AND i.external_id = 'item-007'",
    );
    const norm = Math.hypot(...data.points.subarray(7 * DIM, 8 * DIM));
    const expected = Array.from(data.points.subarray(7 * DIM, 8 * DIM), (x) => x / norm);
    (JSON.parse(stored[0].embedding) as number[]).forEach((x, j) => expect(x).toBeCloseTo(expected[j], 6));
    const again = await client.ingestEmbeddings(
      'emb',
      { externalIds: ids.slice(0, 3), vectors: data.points.subarray(0, 3 * DIM), dimension: DIM, metadata: [0, 1, 2].map(metadataOf) },
      { results: 'errors' },
    );
    expect(again.counts).toEqual({ stored: 0, updated: 3, failed: 0 });
    expect(again.items).toEqual([]);
    const refused = await client.ingestEmbeddings('emb', { externalIds: ['nan-1', 'nan-2'], vectors: new Float32Array(2 * DIM).fill(Number.NaN), dimension: DIM });
    expect(refused.counts).toEqual({ stored: 0, updated: 0, failed: 2 });
    expect(refused.items.map((o) => [o.externalId, o.status === 'error' && o.code])).toEqual([
      ['nan-1', 'NON_FINITE_VALUE'],
      ['nan-2', 'NON_FINITE_VALUE'],
    ]);
    expect(() => encodeEmbeddingFrames({ externalIds: ['a'], vectors: new Float32Array(3), dimension: DIM })).toThrow(RangeError);
  });

  it('finds which external ids are stored in one lookup, in request order, each once; validates the request', async () => {
    expect(await client.findExistingItems('emb', ['item-010', 'nope', 'item-002', 'item-010', 'item-999'])).toEqual(['item-010', 'item-002']);
    const reader = createClient({ baseUrl, apiKey: h.keys.reader });
    expect(await reader.findExistingItems('emb', ['item-001'])).toEqual(['item-001']);
    // More than one request's worth: the client splits it.
    const many = [...Array.from({ length: 10_500 }, (_, i) => `absent-${i}`), 'item-239'];
    expect(await client.findExistingItems('emb', many)).toEqual(['item-239']);
    const raw = (body: unknown) => client.raw.POST('/v1/datasets/{dataset}/items/existing', { params: { path: { dataset: 'emb' } }, body: body as { externalIds: string[] } });
    for (const [body, field] of [
      [{ externalIds: [] }, 'body/externalIds'],
      [{ externalIds: Array.from({ length: 10_001 }, (_, i) => `x-${i}`) }, 'body/externalIds'],
      [{ externalIds: [''] }, 'body/externalIds/0'],
      [{ ids: ['a'] }, 'body/externalIds'],
    ] as const) {
      const { error, response } = await raw(body);
      expect(response.status, field).toBe(400);
      expect(error?.error).toMatchObject({ code: 'VALIDATION_FAILED', details: { field } });
    }
    const unknown = (await client.findExistingItems('nowhere', ['a']).catch((e: unknown) => e)) as ProtopruneError;
    expect([unknown.status, unknown.code]).toEqual([404, 'DATASET_NOT_FOUND']);
    const other = (await createClient({ baseUrl, apiKey: h.keys.otherOnly }).findExistingItems('emb', ['a']).catch((e: unknown) => e)) as ProtopruneError;
    expect(other.status).toBe(403);
  });

  it('streams a selection row by row, equal to the paged JSON selection, with its headers', async () => {
    const query = { order: 'hardest' as const, fraction: 0.25, filter: { contains: { split: 'train' } } };
    const stream = await client.streamSelection('emb', query);
    const streamed: string[] = [];
    for await (const row of stream) streamed.push(row.externalId);
    const first = await client.selectPage('emb', query, { limit: 20 });
    const second = await client.selectPage('emb', query, { limit: 20, cursor: first.nextCursor! });
    expect(second.nextCursor).toBeNull();
    const paged = [...first.externalIds, ...second.externalIds];
    expect(paged).toHaveLength(30);
    expect(streamed).toEqual(paged);
    expect(stream.info).toMatchObject({ prototypeVersion: first.prototypeVersion, total: N, matched: 120, size: 30, policy: 'hardest', dedup: null });
    expect(stream.info.imbalance).toEqual(first.imbalance);

    const none = await client.streamSelection('emb', { order: 'hardest', fraction: 0.5, filter: { contains: { split: 'validation' } } });
    const noRows: unknown[] = [];
    for await (const row of none) noRows.push(row);
    expect(noRows).toEqual([]);
    expect(none.info).toMatchObject({ matched: 0, size: 0 });

    const csv = await client.downloadSelection('emb', { order: 'easiest', count: 5 }, 'csv');
    expect(csv.info.size).toBe(5);
    const text = await new Response(csv.body).text();
    expect(text.split('\n')[0]).toBe('external_id');
    expect(text.trim().split('\n')).toHaveLength(6);
  });

  it('saves a selection as a manifest and streams its ids back in order, with their count and digest', async () => {
    const query = { order: 'hardest' as const, fraction: 0.25, filter: { contains: { split: 'train' } } };
    const selected: string[] = [];
    for await (const row of await client.streamSelection('emb', query)) selected.push(row.externalId);
    const manifest = await client.createManifest('emb', { selection: query, name: 'ts-client' });
    expect(manifest).toMatchObject({ kind: 'selection', dataset: 'emb', count: selected.length, name: 'ts-client' });
    const ids = await client.streamManifestIds(manifest.id);
    const streamed: string[] = [];
    for await (const row of ids) streamed.push(row.externalId);
    expect(streamed).toEqual(selected);
    expect(ids.info).toEqual({ prototypeVersion: manifest.prototypeVersion, count: selected.length, sha256: manifest.sha256 });
    const csv = await client.downloadManifestIds(manifest.id, 'csv');
    expect((await new Response(csv.body).text()).trim().split('\n')).toEqual(['external_id', ...selected]);
    expect(await client.getManifest(manifest.id)).toEqual(manifest);
    expect((await client.listManifests('emb')).manifests.map((m) => m.id)).toContain(manifest.id);
    await client.deleteManifest(manifest.id);
    const gone = (await client.getManifest(manifest.id).catch((e: unknown) => e)) as ProtopruneError;
    expect(gone).toMatchObject({ status: 404, code: 'MANIFEST_NOT_FOUND' });
  });

  it('stops a stream early without breaking the next call', async () => {
    const stream = await client.streamSelection('emb', { order: 'random', fraction: 1 });
    let read = 0;
    for await (const row of stream) {
      expect(row.externalId).toMatch(/^item-/);
      if (++read === 3) break;
    }
    expect(read).toBe(3);
    const unread = await client.streamScores('emb');
    await unread.cancel();
    expect((await client.stats('emb')).itemCount).toBe(N);
  });

  it('streams the score export as rows (easiest first) and downloads it as Parquet', async () => {
    const rows: ScoreRow[] = [];
    const stream = await client.streamScores('emb', { filter: { where: [{ field: 'i', op: 'lt', value: 50 }] } });
    for await (const row of stream) rows.push(row);
    expect(stream.info).toMatchObject({ total: N, matched: 50, dedupJobId: null });
    expect(rows).toHaveLength(50);
    expect(rows.every((r, i) => i === 0 || r.score >= rows[i - 1].score)).toBe(true);
    expect(rows[0]).toMatchObject({ prototypeVersion: stream.info.prototypeVersion, duplicateOf: null });
    expect(rows.find((r) => r.externalId === 'item-004')!.metadata).toEqual({ split: 'train', i: 4 });

    const parquet = await client.downloadScores('emb', {}, 'parquet');
    const bytes = new Uint8Array(await new Response(parquet.body).arrayBuffer());
    expect(Buffer.from(bytes.subarray(0, 4)).toString()).toBe('PAR1');
    const file = { byteLength: bytes.byteLength, slice: async (start: number, end?: number) => bytes.slice(start, end).buffer };
    const table = await parquetReadObjects({ file, columns: ['external_id', 'score'] });
    expect(table.map((r) => r.external_id).sort()).toEqual([...ids].sort());
  });

  it('scores new embeddings with keep/skip decisions', async () => {
    const fresh = Float32Array.from(data.points.subarray(0, DIM), (x, j) => x + (j === 0 ? 0.5 : 0));
    const result = await client.score('emb', {
      items: [
        { externalId: 'copy-of-0', embedding: Array.from(data.points.subarray(0, DIM)) },
        { externalId: 'moved', embedding: Buffer.from(fresh.buffer).toString('base64') },
        { externalId: 'short', embedding: [1, 2] },
      ],
      policy: { order: 'hardest', fraction: 0.3 },
    });
    const [copy, moved, short] = result.items;
    expect(copy).toMatchObject({ status: 'scored', duplicate: true, decision: 'skip', reason: 'near-duplicate', nearest: { externalId: 'item-000' } });
    expect(moved).toMatchObject({ status: 'scored' });
    expect(short).toMatchObject({ status: 'error', code: 'DIMENSION_MISMATCH' });
  });

  it('waits for a job with progress callbacks, and stops waiting on abort', async () => {
    const seen: string[] = [];
    const dedup = await client.requestDedup('emb', { epsilon: 0.1 });
    const finished = await client.waitForJob(dedup.id, { intervalMs: 20, onProgress: (job) => seen.push(job.state) });
    expect(finished.state).toBe('succeeded');
    expect(seen.at(-1)).toBe('succeeded');
    const run = await client.duplicates('emb', { job: dedup.id, limit: 1 });
    expect(run).toMatchObject({ jobId: dedup.id, epsilon: 0.1 });
    const controller = new AbortController();
    const waiting = client.waitForJob(dedup.id, { signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
  });

  it('ingests image files (a corrupt one fails alone; a batch of only bad files is item by item)', async () => {
    await client.createDataset({ name: 'photos', k: 2 });
    const [a, b] = await Promise.all([1, 2].map((seed) => jpeg(64, 48, sceneRaw(64, 48, seed))));
    const result = await client.ingestImages('photos', [
      { externalId: 'dir/a.jpg', image: a, metadata: { label: 'a' } },
      { externalId: 'b.jpg', image: b },
      { externalId: 'broken.jpg', image: a.subarray(0, 100) },
    ]);
    expect(result.items.map((o) => [o.externalId, o.status === 'error' ? o.code : o.status])).toEqual([
      ['dir/a.jpg', 'stored'],
      ['b.jpg', 'stored'],
      ['broken.jpg', 'CORRUPT_IMAGE'],
    ]);
    const { data: item } = await client.raw.GET('/v1/datasets/{dataset}/items/{externalId}', { params: { path: { dataset: 'photos', externalId: 'dir/a.jpg' } } });
    expect(item!.metadata).toEqual({ label: 'a' });
    const allBad = await client.ingestImages('photos', [{ externalId: 'text.jpg', image: new TextEncoder().encode('not an image') }]);
    expect(allBad.items).toEqual([{ externalId: 'text.jpg', status: 'error', code: 'UNSUPPORTED_FORMAT', message: expect.any(String) }]);
    expect(await client.findExistingItems('photos', ['dir/a.jpg', 'b.jpg', 'broken.jpg', 'text.jpg'])).toEqual(['dir/a.jpg', 'b.jpg']);
  });

  it('mints, lists and revokes API keys', async () => {
    const key = await client.createApiKey({ name: 'trainer', scopes: ['read'], datasets: ['emb'] });
    expect(key.secret).toMatch(/^pp_/);
    const trainer = createClient({ baseUrl, apiKey: key.secret });
    expect((await trainer.listDatasets()).map((d) => d.name)).toEqual(['emb']);
    expect((await client.listApiKeys()).find((k) => k.id === key.id)).toMatchObject({ name: 'trainer', revokedAt: null });
    expect((await client.revokeApiKey(key.id)).revokedAt).not.toBeNull();
    expect(((await trainer.listDatasets().catch((e: unknown) => e)) as ProtopruneError).status).toBe(401);
  });
});

describe('TypeScript client retries', () => {
  let h: ApiHarness;
  let baseUrl: string;
  /** A client whose fetches are counted, with their statuses. */
  const counting = (retry?: { attempts?: number; maxDelayMs?: number }) => {
    const statuses: number[] = [];
    const client = createClient({
      baseUrl,
      apiKey: h.keys.admin,
      retry,
      fetch: async (request) => {
        const response = await fetch(request);
        statuses.push(response.status);
        return response;
      },
    });
    return { client, statuses };
  };
  /**
   * Takes the server's only admission slot (ADMISSION_MAX_IN_FLIGHT=1) for `ms`: meanwhile every
   * API call is refused at once with 503 SERVER_BUSY. `released` settles once it is given back.
   */
  async function holdSlot(ms: number): Promise<{ released: Promise<void> }> {
    const release = await h.service.admission.acquire();
    return { released: new Promise((resolve) => setTimeout(() => resolve(release()), ms)) };
  }

  beforeAll(async () => {
    h = await startApi(BACKENDS[0], { ADMISSION_MAX_IN_FLIGHT: '1', ADMISSION_QUEUE_TIMEOUT_MS: '0' });
    baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    await createClient({ baseUrl, apiKey: h.keys.admin }).createDataset({ name: 'busy', dimension: 2 });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('retries an idempotent call refused with 503 after its Retry-After, then succeeds', async () => {
    const { client, statuses } = counting();
    const held = await holdSlot(1500);
    const startedAt = Date.now();
    expect((await client.getDataset('busy')).name).toBe('busy');
    expect(statuses[0]).toBe(503);
    expect(statuses.at(-1)).toBe(200);
    expect(statuses.length).toBeGreaterThanOrEqual(2);
    // Retry-After: 1 (second), never sooner.
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1000);
    await held.released;
  });

  it('retries an ingest (re-sending replaces), but not a dataset creation', async () => {
    const { client, statuses } = counting();
    let held = await holdSlot(1200);
    const result = await client.ingestEmbeddings('busy', { externalIds: ['a'], vectors: Float32Array.of(1, 0), dimension: 2 });
    expect(result.counts.stored).toBe(1);
    expect(statuses[0]).toBe(503);
    await held.released;
    statuses.length = 0;
    held = await holdSlot(1200);
    const refused = (await client.createDataset({ name: 'later', dimension: 2 }).catch((e: unknown) => e)) as ProtopruneError;
    expect(refused).toBeInstanceOf(ProtopruneError);
    expect(refused).toMatchObject({ status: 503, code: 'SERVER_BUSY', retryAfterMs: 1000 });
    expect(statuses).toEqual([503]);
    await held.released;
  });

  it('gives up after the configured attempts, or at once when told to wait longer than maxDelayMs', async () => {
    const held = await holdSlot(2500);
    const bounded = counting({ attempts: 2 });
    const error = (await bounded.client.stats('busy').catch((e: unknown) => e)) as ProtopruneError;
    expect([error.status, error.code]).toEqual([503, 'SERVER_BUSY']);
    expect(bounded.statuses).toEqual([503, 503]);
    const impatient = counting({ maxDelayMs: 500 });
    const hint = (await impatient.client.stats('busy').catch((e: unknown) => e)) as ProtopruneError;
    expect(hint.retryAfterMs).toBe(1000);
    expect(impatient.statuses).toEqual([503]);
    await held.released;
  });

  it('reports a server that cannot be reached as status 0', async () => {
    const offline = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
    const error = (await offline.listDatasets().catch((e: unknown) => e)) as ProtopruneError;
    expect([error.status, error.code]).toEqual([0, 'CONNECTION_FAILED']);
    expect(error.message).toContain('ECONNREFUSED');
  });
});
