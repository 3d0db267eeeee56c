import { createHash, randomUUID } from 'node:crypto';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { createDataset, deleteDataset, getDataset } from '../../src/service/datasets.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { ApiClient } from '../grpc/client.js';
import { binary, parseCsv } from '../helpers/http-formats.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 16;
const N = 200;
const SEED = 7;

/** The digest the API documents, computed independently: each id's UTF-8 bytes and a NUL byte, in order. */
function idListSha256(ids: readonly string[]): string {
  const hash = createHash('sha256');
  for (const id of ids) hash.update(Buffer.from(id, 'utf8')).update(Buffer.from([0]));
  return hash.digest('hex');
}


const ndjsonIds = (text: string) => text.split('\n').filter(Boolean).map((line) => JSON.parse(line).externalId as string);

/** External ids that need quoting in CSV, escaping in JSON, and a line break the digest must not confuse. */
const idOf = (i: number) => (i === 3 ? 'img,"3"' : i === 5 ? 'line\nbreak-5' : i === 8 ? 'ünï-😀-8' : `img-${String(i).padStart(4, '0')}`);

describe.each(BACKENDS)('subset manifests on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpc: ApiClient;
  const data = plantedClusters({ seed: 11, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.5 });
  const items = Array.from({ length: N }, (_, i) => ({
    externalId: idOf(i),
    embedding: Array.from(data.points.subarray(i * DIM, (i + 1) * DIM)),
    metadata: { split: i % 3 === 0 ? 'val' : 'train' },
  }));

  const as = (key: string) => ({ get: (path: string) => http.get(path).set('authorization', bearer(key)) });
  const selectionIds = async (query: Record<string, unknown>) => {
    const res = await as(h.keys.reader)
      .get('/v1/datasets/man/selection')
      .query(Object.fromEntries(Object.entries(query).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])))
      .query({ format: 'ndjson' })
      .expect(200);
    return ndjsonIds(res.text);
  };
  const create = (body: unknown, key = h.keys.writer, dataset = 'man') => http.post(`/v1/datasets/${dataset}/manifests`).set('authorization', bearer(key)).send(body as object);
  const manifestNdjson = async (id: string) => {
    const res = await as(h.keys.reader).get(`/v1/manifests/${id}`).query({ format: 'ndjson' }).expect(200);
    return { res, ids: ndjsonIds(res.text) };
  };

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    http = request(h.service.http.server);
    grpc = new ApiClient(h.service.grpc.port, h.keys.writer);
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'man', dimension: DIM, k: 4, settings: { minItemsForFit: 10_000, autoRefit: false, seed: SEED } });
    await ingestItems(ctx, 'man', items);
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'man')).id)).state).toBe('succeeded');
  }, 300_000);
  afterAll(async () => {
    grpc?.close();
    await h?.close();
  });

  // One manifest per path the database serves a selection by: ranked in SQL (hardest, filtered) and in memory (random).
  const selections = [
    { order: 'hardest', fraction: 0.3, filter: { contains: { split: 'train' } } },
    { order: 'random', count: 50, seed: 3, balance: 'cluster' },
  ];

  it.each(selections)('a selection’s manifest ($order) holds the selection’s ids in order, as NDJSON, CSV and Parquet, with their SHA-256', async (selection) => {
    const expected = await selectionIds(selection);
    expect(expected.length).toBeGreaterThan(10);
    const created = await create({ selection, name: `sel-${selection.order}`, description: 'a training subset' }).expect(201);
    const dataset = await getDataset(h.service.services.ctx, 'man');
    expect(created.headers.location).toBe(`/v1/manifests/${created.body.id}`);
    expect(created.body).toMatchObject({
      dataset: 'man',
      datasetId: dataset.id,
      name: `sel-${selection.order}`,
      description: 'a training subset',
      kind: 'selection',
      encoder: null,
      prototypeVersion: dataset.activeVersion,
      k: 4,
      seed: SEED,
      parameters: selection,
      count: expected.length,
      sha256: idListSha256(expected),
    });
    expect(created.body.summary).toMatchObject({ version: dataset.activeVersion, total: N, size: expected.length });
    expect(created.body.summary.matched).toBe(selection.filter ? items.filter((i) => i.metadata.split === 'train').length : N);
    expect(typeof created.body.createdByKeyId).toBe('string');
    const id = created.body.id as string;

    const meta = await as(h.keys.reader).get(`/v1/manifests/${id}`).expect(200);
    expect(meta.body).toEqual(created.body);

    const { res, ids } = await manifestNdjson(id);
    expect(res.headers['content-type']).toContain('application/x-ndjson');
    expect(res.headers['x-manifest-count']).toBe(String(expected.length));
    expect(res.headers['x-manifest-sha256']).toBe(idListSha256(expected));
    expect(ids).toEqual(expected);

    const csv = await as(h.keys.reader).get(`/v1/manifests/${id}`).set('accept', 'text/csv').expect(200);
    expect(csv.headers['content-type']).toContain('text/csv');
    const [header, ...records] = parseCsv(csv.text);
    expect(header).toEqual(['external_id']);
    expect(records.map((r) => r[0])).toEqual(expected);

    const parquet = await as(h.keys.reader).get(`/v1/manifests/${id}`).query({ format: 'parquet' }).buffer(true).parse(binary).expect(200);
    expect(parquet.headers['content-type']).toBe('application/vnd.apache.parquet');
    expect(parquet.headers['x-manifest-sha256']).toBe(idListSha256(expected));
    const table = tableFromIPC(readParquet(new Uint8Array(parquet.body as Buffer)).intoIPCStream());
    expect(table.schema.fields.map((f) => f.name)).toEqual(['external_id']);
    expect(table.toArray().map((r) => r.toJSON().external_id)).toEqual(expected);
  });

  it('an export’s manifest holds the score export’s ids in its order (easiest first), filtered as asked', async () => {
    const filter = { contains: { split: 'val' } };
    const exported = await as(h.keys.reader).get('/v1/datasets/man/scores').query({ filter: JSON.stringify(filter) }).expect(200);
    const expected = ndjsonIds(exported.text);
    expect(expected).toHaveLength(items.filter((i) => i.metadata.split === 'val').length);
    const created = await create({ export: { filter } }).expect(201);
    expect(created.body).toMatchObject({ kind: 'export', name: null, description: null, parameters: { filter }, count: expected.length, sha256: idListSha256(expected) });
    expect(created.body.summary).toMatchObject({ total: N, matched: expected.length, dedupJobId: null });
    expect((await manifestNdjson(created.body.id)).ids).toEqual(expected);
  });

  it('returns exactly the ids it was created with after more items arrive and a refit switches versions, while the live selection changes', async () => {
    const selection = { order: 'hardest', fraction: 0.25 };
    const original = await selectionIds(selection);
    const created = await create({ selection }).expect(201);
    const versionBefore = (await getDataset(h.service.services.ctx, 'man')).activeVersion;

    // Spread-out vectors far from every planted cluster: the hardest items of the next version.
    const rng = new Rng(5);
    const outliers = Array.from({ length: 60 }, (_, i) => ({ externalId: `late-${i}`, embedding: Array.from({ length: DIM }, () => rng.next() * 2 - 1), metadata: { split: 'train' } }));
    await ingestItems(h.service.services.ctx, 'man', outliers);
    expect((await waitForJob(h.service.db, (await requestRefit(h.service.services.ctx, 'man')).id)).state).toBe('succeeded');
    expect((await getDataset(h.service.services.ctx, 'man')).activeVersion).not.toBe(versionBefore);

    const live = await selectionIds(selection);
    expect(live).not.toEqual(original);
    const { res, ids } = await manifestNdjson(created.body.id);
    expect(ids).toEqual(original);
    expect(res.headers['x-manifest-sha256']).toBe(idListSha256(original));
    expect(res.headers['x-prototype-version']).toBe(String(versionBefore));
    expect((await as(h.keys.reader).get(`/v1/manifests/${created.body.id}`).expect(200)).body).toEqual(created.body);
  }, 300_000);

  it('stores more ids than one chunk in order, across chunk rows of at most 5,000', async () => {
    const ctx = h.service.services.ctx;
    const count = 11_003;
    const rng = new Rng(9);
    await createDataset(ctx, { name: 'big', dimension: 4, k: 3, settings: { minItemsForFit: 100_000, autoRefit: false } });
    const big = Array.from({ length: count }, (_, i) => ({ externalId: `b-${i}`, embedding: Array.from({ length: 4 }, () => rng.next() * 2 - 1) }));
    for (let at = 0; at < count; at += 1000) await ingestItems(ctx, 'big', big.slice(at, at + 1000));
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'big')).id)).state).toBe('succeeded');
    const expected = ndjsonIds((await as(h.keys.reader).get('/v1/datasets/big/scores').expect(200)).text);
    expect(expected).toHaveLength(count);
    const created = await create({ export: {} }, h.keys.writer, 'big').expect(201);
    expect(created.body).toMatchObject({ count, sha256: idListSha256(expected) });
    const rows = await h.service.db.query<{ chunk: number; n: number }>('SELECT chunk, cardinality(ids) AS n FROM manifest_ids WHERE manifest_id = $1 ORDER BY chunk', [created.body.id]);
    expect(rows).toEqual([
      { chunk: 0, n: 5000 },
      { chunk: 1, n: 5000 },
      { chunk: 2, n: 1003 },
    ]);
    expect((await manifestNdjson(created.body.id)).ids).toEqual(expected);
  }, 300_000);

  it('an empty selection saves an empty manifest: no ids as NDJSON or CSV, the empty digest, one gRPC message', async () => {
    const created = await create({ selection: { count: 0 } }).expect(201);
    expect(created.body).toMatchObject({ count: 0, sha256: idListSha256([]) });
    expect((await manifestNdjson(created.body.id)).ids).toEqual([]);
    const csv = await as(h.keys.reader).get(`/v1/manifests/${created.body.id}`).query({ format: 'csv' }).expect(200);
    expect(csv.text).toBe('external_id\n');
    const messages = await grpc.stream('StreamManifestIds', { id: created.body.id });
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatchObject({ manifest: { id: created.body.id, count: 0 }, externalIds: [] });
  });

  it('keys: another dataset’s key gets 404, a read key cannot create, unknown and malformed ids are 404, bad bodies 400', async () => {
    const created = await create({ selection: { fraction: 0.1 } }).expect(201);
    const id = created.body.id as string;
    expect(created.body.parameters).toEqual({ fraction: 0.1 });

    for (const res of [
      await as(h.keys.otherOnly).get(`/v1/manifests/${id}`).expect(404),
      await as(h.keys.otherOnly).get(`/v1/manifests/${id}`).query({ format: 'ndjson' }).expect(404),
      await http.delete(`/v1/manifests/${id}`).set('authorization', bearer(h.keys.otherOnly)).expect(404),
      await as(h.keys.reader).get(`/v1/manifests/${randomUUID()}`).expect(404),
      await as(h.keys.reader).get('/v1/manifests/not-a-manifest').expect(404),
    ]) {
      expect(res.body.error.code).toBe('MANIFEST_NOT_FOUND');
    }
    expect((await create({ selection: { fraction: 0.1 } }, h.keys.otherOnly).expect(403)).body.error.code).toBe('DATASET_FORBIDDEN');
    expect((await create({ selection: { fraction: 0.1 } }, h.keys.reader).expect(403)).body.error.code).toBe('INSUFFICIENT_SCOPE');
    expect((await http.delete(`/v1/manifests/${id}`).set('authorization', bearer(h.keys.reader)).expect(403)).body.error.code).toBe('INSUFFICIENT_SCOPE');
    await http.get(`/v1/manifests/${id}`).expect(401);
    // Still there for the keys that may see it.
    expect((await as(h.keys.reader).get(`/v1/manifests/${id}`).expect(200)).body.id).toBe(id);

    expect((await create({}).expect(400)).body.error.code).toBe('INVALID_MANIFEST');
    expect((await create({ selection: { fraction: 0.1 }, export: {} }).expect(400)).body.error.code).toBe('INVALID_MANIFEST');
    expect((await create({ selection: { fraction: 0.1, count: 3 } }).expect(400)).body.error.code).toBe('INVALID_SELECTION');
    expect((await create({ selection: { fraction: '0.1' } }).expect(400)).body.error.code).toBe('VALIDATION_FAILED');
    expect((await create({ selection: { fraction: 0.1, filter: { where: [{ field: 'a', op: 'lt', value: true }] } } }).expect(400)).body.error.code).toBe('INVALID_FILTER');
    expect((await create({ export: { epsilon: 0.3 } }).expect(409)).body.error.code).toBe('DEDUP_NOT_RUN');
    expect((await create({ selection: { fraction: 0.1 } }, h.keys.writer, 'nope').expect(404)).body.error.code).toBe('DATASET_NOT_FOUND');
  });

  it('lists a dataset’s manifests newest first in pages, deletes one with its ids, and goes with its dataset', async () => {
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'brief', dimension: DIM, k: 2, settings: { minItemsForFit: 10_000, autoRefit: false } });
    await ingestItems(ctx, 'brief', items.slice(0, 40));
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'brief')).id)).state).toBe('succeeded');
    const made: string[] = [];
    for (const name of ['first', 'second', 'third']) made.push((await create({ selection: { fraction: 0.5 }, name }, h.keys.writer, 'brief').expect(201)).body.id);

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: request.Response = await as(h.keys.reader)
        .get('/v1/datasets/brief/manifests')
        .query(cursor === null ? { limit: 2 } : { limit: 2, cursor })
        .expect(200);
      expect(page.body.manifests.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.manifests.map((m: { id: string }) => m.id));
      cursor = page.body.nextCursor;
    } while (cursor !== null);
    expect(seen).toEqual([...made].reverse());
    expect((await as(h.keys.reader).get('/v1/datasets/brief/manifests').query({ cursor: 'garbage' }).expect(400)).body.error.code).toBe('INVALID_CURSOR');

    await http.delete(`/v1/manifests/${made[0]}`).set('authorization', bearer(h.keys.writer)).expect(204);
    expect((await as(h.keys.reader).get(`/v1/manifests/${made[0]}`).expect(404)).body.error.code).toBe('MANIFEST_NOT_FOUND');
    const leftover = await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM manifest_ids WHERE manifest_id = $1', [made[0]]);
    expect(leftover[0].n).toBe(0);

    await deleteDataset(ctx, 'brief');
    const rows = await h.service.db.query<{ n: number }>(
      'SELECT (SELECT count(*) FROM manifests WHERE id = ANY($1::uuid[]))::int + (SELECT count(*) FROM manifest_ids WHERE manifest_id = ANY($1::uuid[]))::int AS n',
      [made],
    );
    expect(rows[0].n).toBe(0);
  }, 300_000);

  it('gRPC CreateManifest, GetManifest and StreamManifestIds give the same manifest and ids as REST', async () => {
    const selection = { order: 'stratified', fraction: 0.4, seed: 2, bins: 5 };
    const expected = await selectionIds(selection);
    const made = await grpc.unary('CreateManifest', {
      dataset: 'man',
      selection: { order: 'SELECTION_ORDER_STRATIFIED', fraction: 0.4, seed: 2, bins: 5 },
      name: 'over-grpc',
    });
    expect(made).toMatchObject({ dataset: 'man', kind: 'selection', name: 'over-grpc', count: expected.length, sha256: idListSha256(expected) });
    expect(JSON.parse(made.parametersJson)).toEqual(selection);
    const rest = (await as(h.keys.reader).get(`/v1/manifests/${made.id}`).expect(200)).body;
    const reader = grpc.withKey(h.keys.reader);
    const got = await reader.unary('GetManifest', { id: made.id });
    expect(got).toEqual(made);
    expect({ ...got, parameters: JSON.parse(got.parametersJson), summary: JSON.parse(got.summaryJson) }).toMatchObject({
      id: rest.id,
      datasetId: rest.datasetId,
      prototypeVersion: rest.prototypeVersion,
      k: rest.k,
      seed: rest.seed,
      parameters: rest.parameters,
      summary: rest.summary,
      count: rest.count,
      sha256: rest.sha256,
      createdAt: rest.createdAt,
      createdByKeyId: rest.createdByKeyId,
    });

    const messages = await reader.stream('StreamManifestIds', { id: made.id, chunkSize: 7 });
    expect(messages[0].manifest).toEqual(made);
    expect(messages.slice(1).every((m) => m.manifest === null || m.manifest === undefined)).toBe(true);
    expect(messages.every((m) => m.externalIds.length >= 1 && m.externalIds.length <= 7)).toBe(true);
    expect(messages.flatMap((m) => m.externalIds)).toEqual(expected);

    const exported = await grpc.unary('CreateManifest', { dataset: 'man', export: {} });
    const exportIds = ndjsonIds((await as(h.keys.reader).get('/v1/datasets/man/scores').expect(200)).text);
    expect(exported).toMatchObject({ kind: 'export', count: exportIds.length, sha256: idListSha256(exportIds) });
    expect((await reader.stream('StreamManifestIds', { id: exported.id })).flatMap((m) => m.externalIds)).toEqual(exportIds);

    const listed = await reader.unary('ListManifests', { dataset: 'man', pageSize: 1 });
    expect(listed.manifests.map((m: { id: string }) => m.id)).toEqual([exported.id]);
    expect(listed.nextPageToken).not.toBe('');

    expect(await grpc.withKey(h.keys.otherOnly).fails('GetManifest', { id: made.id })).toMatchObject({ code: 5, errorCode: 'MANIFEST_NOT_FOUND' });
    expect(await grpc.withKey(h.keys.otherOnly).streamFails('StreamManifestIds', { id: made.id })).toMatchObject({ code: 5, errorCode: 'MANIFEST_NOT_FOUND' });
    expect(await reader.fails('CreateManifest', { dataset: 'man', export: {} })).toMatchObject({ code: 7, errorCode: 'INSUFFICIENT_SCOPE' });
    expect(await grpc.fails('CreateManifest', { dataset: 'man' })).toMatchObject({ code: 3, errorCode: 'INVALID_MANIFEST' });
    expect(await grpc.fails('CreateManifest', { dataset: 'man', selection: { dataset: 'other', fraction: 0.1 } })).toMatchObject({ code: 3, errorCode: 'DATASET_MISMATCH' });
    expect(await reader.fails('GetManifest', { id: 'nope' })).toMatchObject({ code: 5, errorCode: 'MANIFEST_NOT_FOUND' });

    expect(await reader.fails('DeleteManifest', { id: exported.id })).toMatchObject({ code: 7, errorCode: 'INSUFFICIENT_SCOPE' });
    await grpc.unary('DeleteManifest', { id: exported.id });
    expect(await reader.fails('GetManifest', { id: exported.id })).toMatchObject({ code: 5, errorCode: 'MANIFEST_NOT_FOUND' });
  });
});
