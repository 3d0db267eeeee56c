import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { budgetSize } from '../../src/core/selection.js';
import { createDataset } from '../../src/service/datasets.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { ApiClient } from '../grpc/client.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 12;
const N = 240;

interface Meta {
  split: 'train' | 'val';
  labeled: boolean;
  quality?: number;
  camera: { model: string };
  tag: string;
}

interface Row {
  externalId: string;
  score: number;
  cluster: number;
  percentile: number;
  metadata: Meta;
}

/** What each item's metadata is: a mix of kinds so every operator has something to tell apart. */
function metaOf(i: number): Meta {
  return {
    split: i % 3 === 0 ? 'val' : 'train',
    labeled: i % 4 === 0,
    ...(i % 5 === 0 ? {} : { quality: (i % 17) / 16 }),
    camera: { model: i % 2 === 0 ? 'a' : "b'; DROP TABLE items; --" },
    tag: `t${i % 7}`,
  };
}

const byHardest = (a: Row, b: Row) => b.score - a.score || (a.externalId < b.externalId ? -1 : a.externalId > b.externalId ? 1 : 0);

describe.each(BACKENDS)('metadata filters on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpc: ApiClient;
  const data = plantedClusters({ seed: 8, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.5 });
  const vector = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));
  let rows: Row[];

  const get = (path: string, query: Record<string, unknown>) =>
    http
      .get(path)
      .query(Object.fromEntries(Object.entries(query).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])))
      .set('authorization', bearer(h.keys.reader));
  const ndjsonIds = async (query: Record<string, unknown>) => {
    const res = await get('/v1/datasets/meta/selection', { ...query, format: 'ndjson' }).expect(200);
    return { res, ids: res.text.split('\n').filter(Boolean).map((l) => JSON.parse(l).externalId as string) };
  };

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    http = request(h.service.http.server);
    grpc = new ApiClient(h.service.grpc.port, h.keys.reader);
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'meta', dimension: DIM, k: 4, settings: { minItemsForFit: 10_000, autoRefit: false } });
    await ingestItems(
      ctx,
      'meta',
      Array.from({ length: N }, (_, i) => ({ externalId: `m-${String(i).padStart(3, '0')}`, embedding: vector(i), metadata: metaOf(i) as unknown as Record<string, unknown> })),
    );
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'meta')).id)).state).toBe('succeeded');
    const all = await get('/v1/datasets/meta/scores', {}).expect(200);
    rows = all.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Row);
    expect(rows).toHaveLength(N);
  }, 300_000);
  afterAll(async () => {
    grpc?.close();
    await h?.close();
  });

  it('selection: hardest 30% of split=train is the hardest 30% of the train items, and says how many matched', async () => {
    const train = rows.filter((r) => r.metadata.split === 'train');
    const filter = { contains: { split: 'train' } };
    const expected = [...train].sort(byHardest).slice(0, budgetSize({ fraction: 0.3 }, train.length)).map((r) => r.externalId);
    const { res, ids } = await ndjsonIds({ order: 'hardest', fraction: 0.3, filter });
    expect(ids).toEqual(expected);
    expect(res.headers['x-selection-total']).toBe(String(N));
    expect(res.headers['x-selection-matched']).toBe(String(train.length));

    // JSON pages: the first computes and stores the selection, a later page reports the same counts.
    const first = await get('/v1/datasets/meta/selection', { order: 'hardest', fraction: 0.3, filter, limit: 10 }).expect(200);
    expect(first.body).toMatchObject({ total: N, matched: train.length, size: expected.length, externalIds: expected.slice(0, 10) });
    const second = await get('/v1/datasets/meta/selection', { order: 'hardest', fraction: 0.3, filter, limit: 10, cursor: first.body.nextCursor }).expect(200);
    expect(second.body).toMatchObject({ total: N, matched: train.length, size: expected.length, externalIds: expected.slice(10, 20) });
    // A cursor is bound to its filter.
    const other = await get('/v1/datasets/meta/selection', { order: 'hardest', fraction: 0.3, filter: { contains: { split: 'val' } }, limit: 10, cursor: first.body.nextCursor }).expect(400);
    expect(other.body.error.code).toBe('INVALID_CURSOR');
  });

  it('comparisons, dotted paths, in, exists and missing pick exactly the items a direct evaluation picks, in every order', async () => {
    const cases: { filter: unknown; keep: (m: Meta) => boolean }[] = [
      { filter: { where: [{ field: 'quality', op: 'gte', value: 0.5 }] }, keep: (m) => m.quality !== undefined && m.quality >= 0.5 },
      { filter: { where: [{ field: 'quality', op: 'lt', value: 0.25 }, { field: 'labeled', op: 'ne', value: true }] }, keep: (m) => m.quality !== undefined && m.quality < 0.25 && !m.labeled },
      { filter: { where: [{ field: 'quality', op: 'missing' }] }, keep: (m) => m.quality === undefined },
      { filter: { where: [{ field: 'quality', op: 'exists' }, { field: 'split', op: 'eq', value: 'val' }] }, keep: (m) => m.quality !== undefined && m.split === 'val' },
      { filter: { where: [{ field: 'tag', op: 'in', value: ['t1', 't3', 'nope'] }] }, keep: (m) => m.tag === 't1' || m.tag === 't3' },
      { filter: { where: [{ field: 'tag', op: 'gt', value: 't4' }] }, keep: (m) => m.tag > 't4' },
      { filter: { where: [{ field: 'camera.model', op: 'eq', value: "b'; DROP TABLE items; --" }] }, keep: (m) => m.camera.model !== 'a' },
      { filter: { contains: { camera: { model: 'a' } }, where: [{ field: 'split', op: 'lt', value: 5 }] }, keep: () => false },
      { filter: { contains: { labeled: true, split: 'train' } }, keep: (m) => m.labeled && m.split === 'train' },
    ];
    for (const c of cases) {
      const expected = rows.filter((r) => c.keep(r.metadata));
      for (const order of ['hardest', 'easiest', 'random', 'stratified'] as const) {
        for (const balance of ['none', 'cluster'] as const) {
          const { res, ids } = await ndjsonIds({ order, fraction: 1, balance, filter: c.filter });
          expect(res.headers['x-selection-matched'], JSON.stringify(c.filter)).toBe(String(expected.length));
          expect([...ids].sort(), `${order}/${balance} ${JSON.stringify(c.filter)}`).toEqual(expected.map((r) => r.externalId).sort());
        }
      }
      const half = await ndjsonIds({ order: 'random', fraction: 0.5, seed: 3, filter: c.filter });
      expect(half.ids).toHaveLength(budgetSize({ fraction: 0.5 }, expected.length));
      expect(half.ids.every((id) => expected.some((r) => r.externalId === id))).toBe(true);
    }
    // The items table is still there.
    expect((await get('/v1/datasets/meta/stats', {}).expect(200)).body.itemCount).toBe(N);
  });

  it('export, stats and score decisions see only the matching items; percentiles of the export stay over the dataset', async () => {
    const filter = { contains: { split: 'val' }, where: [{ field: 'quality', op: 'exists' }] };
    const expected = rows.filter((r) => r.metadata.split === 'val' && r.metadata.quality !== undefined);
    const exported = await get('/v1/datasets/meta/scores', { filter }).expect(200);
    expect(exported.headers['x-export-total']).toBe(String(N));
    expect(exported.headers['x-export-matched']).toBe(String(expected.length));
    expect(exported.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Row)).toEqual(expected);

    const stats = await get('/v1/datasets/meta/stats', { filter }).expect(200);
    expect(stats.body).toMatchObject({ itemCount: expected.length, matched: expected.length, scoredCount: expected.length });
    const perCluster = [0, 0, 0, 0];
    for (const r of expected) perCluster[r.cluster]++;
    expect(stats.body.clusterSizes).toEqual(perCluster);
    expect(stats.body.histogram.counts.reduce((a: number, b: number) => a + b, 0)).toBe(expected.length);

    // A copy of a stored item: its percentile is taken among the matching items' scores.
    const probe = rows.find((r) => r.metadata.split === 'train')!;
    const index = Number(probe.externalId.slice(2));
    const scored = await http
      .post('/v1/datasets/meta/score')
      .set('authorization', bearer(h.keys.reader))
      .send({ items: [{ externalId: 'probe', embedding: vector(index) }], policy: { order: 'hardest', fraction: 0.3, filter } })
      .expect(200);
    expect(scored.body.matched).toBe(expected.length);
    const item = scored.body.items[0];
    expect(item.score).toBeCloseTo(probe.score, 5);
    expect(item.percentile).toBeCloseTo(expected.filter((r) => r.score <= item.score).length / expected.length, 6);
    const unfiltered = await http.post('/v1/datasets/meta/score').set('authorization', bearer(h.keys.reader)).send({ items: [{ externalId: 'probe', embedding: vector(index) }] }).expect(200);
    expect(unfiltered.body.matched).toBe(N);
  });

  it('gRPC Select, ExportScores, GetStats and ScoreBatch take the same filter and give the same answers', async () => {
    const rest = { contains: { split: 'train' }, where: [{ field: 'quality', op: 'gt', value: 0.3 }, { field: 'tag', op: 'in', value: ['t0', 't2', 't5'] }] };
    const message = { containsJson: JSON.stringify(rest.contains), where: [{ field: 'quality', op: 'FILTER_OP_GT', valueJson: '0.3' }, { field: 'tag', op: 'FILTER_OP_IN', valueJson: '["t0","t2","t5"]' }] };
    const { ids } = await ndjsonIds({ order: 'hardest', fraction: 0.4, balance: 'cluster', filter: rest });
    const selected = await grpc.stream('Select', { dataset: 'meta', order: 'SELECTION_ORDER_HARDEST', fraction: 0.4, balance: 'BALANCE_CLUSTER', filter: message });
    expect(selected.flatMap((m) => m.externalIds)).toEqual(ids);
    const matched = rows.filter((r) => r.metadata.split === 'train' && (r.metadata.quality ?? 0) > 0.3 && ['t0', 't2', 't5'].includes(r.metadata.tag));
    expect(selected[0].summary).toMatchObject({ total: N, matched: matched.length, size: ids.length });

    const exported = await grpc.stream('ExportScores', { dataset: 'meta', filter: message });
    expect(exported[0].summary).toMatchObject({ total: N, matched: matched.length });
    expect(exported.flatMap((m) => m.items.map((r: { externalId: string }) => r.externalId))).toEqual(matched.map((r) => r.externalId));

    const stats = await grpc.unary('GetStats', { dataset: 'meta', filter: message });
    expect(stats).toMatchObject({ itemCount: matched.length, matched: matched.length, scoredCount: matched.length });

    const scored = await grpc.unary('ScoreBatch', { dataset: 'meta', candidates: [{ externalId: 'c', embedding: vector(1) }], policy: { fraction: 0.3, filter: message } });
    expect(scored.matched).toBe(matched.length);

    const bad = await grpc.streamFails('Select', { dataset: 'meta', fraction: 0.5, filter: { where: [{ field: 'x', op: 'FILTER_OP_LT', valueJson: 'true' }] } });
    expect(bad).toMatchObject({ code: 3, errorCode: 'INVALID_FILTER' });
    const notJson = await grpc.fails('GetStats', { dataset: 'meta', filter: { containsJson: '{nope' } });
    expect(notJson).toMatchObject({ code: 3, errorCode: 'INVALID_FILTER' });
    const noOp = await grpc.streamFails('ExportScores', { dataset: 'meta', filter: { where: [{ field: 'x', valueJson: '1' }] } });
    expect(noOp).toMatchObject({ code: 3, errorCode: 'INVALID_FILTER' });
  });

  it('refuses malformed filters with 400 in the one error shape, naming the field', async () => {
    const bad: [unknown, string][] = [
      ['{not json', 'filter'],
      [[1, 2], 'filter'],
      [{ contains: [1] }, 'filter/contains'],
      [{ where: {} }, 'filter/where'],
      [{ where: [{ field: '', op: 'eq', value: 1 }] }, 'filter/where/0/field'],
      [{ where: [{ field: 'a..b', op: 'eq', value: 1 }] }, 'filter/where/0/field'],
      [{ where: [{ field: 'a', op: 'like', value: 1 }] }, 'filter/where/0/op'],
      [{ where: [{ field: 'a', op: 'lt', value: true }] }, 'filter/where/0/value'],
      [{ where: [{ field: 'a', op: 'eq' }] }, 'filter/where/0/value'],
      [{ where: [{ field: 'a', op: 'exists', value: 1 }] }, 'filter/where/0/value'],
      [{ where: [{ field: 'a', op: 'in', value: [] }] }, 'filter/where/0/value'],
      [{ where: [{ field: 'a', op: 'in', value: [{ x: 1 }] }] }, 'filter/where/0/value/0'],
      [{ where: [{ field: 'a', op: 'eq', value: 1, extra: 2 }] }, 'filter/where/0/extra'],
      [{ where: Array.from({ length: 17 }, () => ({ field: 'a', op: 'exists' })) }, 'filter/where'],
      [{ other: 1 }, 'filter/other'],
    ];
    for (const [filter, field] of bad) {
      const text = typeof filter === 'string' ? filter : JSON.stringify(filter);
      for (const path of ['/v1/datasets/meta/selection', '/v1/datasets/meta/scores', '/v1/datasets/meta/stats']) {
        const res = await http.get(path).query({ fraction: path.endsWith('selection') ? '0.5' : undefined, filter: text }).set('authorization', bearer(h.keys.reader)).expect(400);
        expect(res.body.error, `${path} ${text}`).toMatchObject({ code: 'INVALID_FILTER', details: { field } });
      }
    }
    const nul = await get('/v1/datasets/meta/stats', { filter: { contains: { a: 'x\u0000y' } } }).expect(400);
    expect(nul.body.error.code).toBe('INVALID_CHARACTERS');
    const body = await http
      .post('/v1/datasets/meta/score')
      .set('authorization', bearer(h.keys.reader))
      .send({ items: [{ externalId: 'c', embedding: vector(0) }], policy: { filter: { where: [{ field: 'a', op: 'gte', value: null }] } } })
      .expect(400);
    expect(body.body.error.code).toBe('INVALID_FILTER');
  });
});
