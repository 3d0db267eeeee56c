import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SELECTION_ORDER_NAMES } from '../../src/core/selection.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { bearer, startApi, type ApiHarness } from '../http/api-harness.js';
import { ApiClient } from './client.js';

const DIM = 12;
const N = 300;

/** One dataset ingested over REST, an identical one over gRPC: every answer must agree. */
describe('REST and gRPC parity', () => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpc: ApiClient;
  const data = plantedClusters({ seed: 21, clusters: 5, perCluster: N / 5, dim: DIM, noise: 0.45 });
  const vector = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));
  const items = Array.from({ length: N }, (_, i) => ({ externalId: `p${String(i).padStart(3, '0')}`, embedding: vector(i) }));
  const settings = { minItemsForFit: N, seed: 7 };

  async function ndjson(dataset: string, query: Record<string, string | number>): Promise<string[]> {
    const res = await http
      .get(`/v1/datasets/${dataset}/selection`)
      .query({ ...query, format: 'ndjson' })
      .set('authorization', bearer(h.keys.reader))
      .buffer(true)
      .parse((r, done) => {
        let text = '';
        r.on('data', (c: Buffer) => (text += c.toString()));
        r.on('end', () => done(null, text));
      })
      .expect(200);
    return (res.body as string).split('\n').filter(Boolean).map((l) => JSON.parse(l).externalId as string);
  }

  async function viaGrpc(dataset: string, query: { order: string; fraction?: number; count?: number; balance: string; seed: number }): Promise<string[]> {
    const messages = await grpc.stream('Select', {
      dataset,
      order: `SELECTION_ORDER_${query.order.toUpperCase()}`,
      fraction: query.fraction,
      count: query.count,
      balance: `BALANCE_${query.balance.toUpperCase()}`,
      seed: query.seed,
    });
    return messages.flatMap((m) => m.externalIds as string[]);
  }

  beforeAll(async () => {
    h = await startApi(BACKENDS[BACKENDS.length - 1]);
    http = request(h.service.http.server);
    grpc = new ApiClient(h.service.grpc.port, h.keys.admin);

    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'rest', dimension: DIM, k: 6, settings }).expect(201);
    const restIngest = await http.post('/v1/datasets/rest/items').set('authorization', bearer(h.keys.writer)).send({ items }).expect(200);
    await grpc.unary('CreateDataset', { name: 'grpc', dimension: DIM, k: 6, settings });
    const grpcIngest = await grpc.ingest([{ dataset: 'grpc', items: items.map((i) => ({ externalId: i.externalId, embedding: i.embedding })) }]);
    expect(grpcIngest.items).toHaveLength(N);

    for (const jobId of [restIngest.body.scheduledJobId as string, grpcIngest.scheduledJobIds[0] as string]) {
      const views = await grpc.stream('WatchJob', { id: jobId });
      expect(views.at(-1)!.state).toBe('JOB_STATE_SUCCEEDED');
    }
  }, 180_000);

  afterAll(async () => {
    grpc?.close();
    await h?.close();
  });

  for (const order of SELECTION_ORDER_NAMES) {
    for (const balance of ['none', 'cluster'] as const) {
      it(`${order} / balance ${balance}: identical ids over both transports and both ingest paths`, async () => {
        const query = { order, fraction: 0.35, balance, seed: 5 };
        const restOnRest = await ndjson('rest', query);
        expect(restOnRest).toHaveLength(Math.round(0.35 * N));
        expect(await viaGrpc('rest', query)).toEqual(restOnRest);
        expect(await viaGrpc('grpc', query)).toEqual(restOnRest);
        expect(await ndjson('grpc', query)).toEqual(restOnRest);
      });
    }
  }

  it('scores a batch identically over REST and gRPC', async () => {
    const candidates = [0, 61, 122, 183, 244].map((i) => ({ externalId: `new-${i}`, embedding: vector(i).map((v, j) => v + (j % 3 === 0 ? 0.05 : -0.02)) }));
    const rest = await http
      .post('/v1/datasets/rest/score')
      .set('authorization', bearer(h.keys.reader))
      .send({ items: candidates, policy: { order: 'hardest', fraction: 0.5 } })
      .expect(200);
    const overGrpc = await grpc.unary('ScoreBatch', { dataset: 'grpc', candidates, policy: { order: 'SELECTION_ORDER_HARDEST', fraction: 0.5 } });
    expect(overGrpc.items).toHaveLength(candidates.length);
    rest.body.items.forEach((r: { externalId: string; score: number; cluster: number; percentile: number; decision: string; nearest: { externalId: string } }, i: number) => {
      const g = overGrpc.items[i];
      expect(g.externalId).toBe(r.externalId);
      expect(g.score).toBeCloseTo(r.score, 6);
      expect(g.cluster).toBe(r.cluster);
      expect(g.percentile).toBeCloseTo(r.percentile, 9);
      expect(g.decision).toBe(`DECISION_${r.decision.toUpperCase()}`);
      expect(g.nearest.externalId).toBe(r.nearest.externalId);
    });
  });
});
