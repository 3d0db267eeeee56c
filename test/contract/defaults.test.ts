import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { bearer, startApi, type ApiHarness } from '../http/api-harness.js';
import { ApiClient } from '../grpc/client.js';

const DIM = 8;
const N = 120;

/** A message without proto-loader's synthetic oneof fields (`_seed: 'seed'` for a set `optional seed`). */
const withoutOneofNames = (message: object): unknown => JSON.parse(JSON.stringify(message, (key, value: unknown) => (key.startsWith('_') ? undefined : value)));

/**
 * The same minimal request (every defaulted field left out) over REST and over gRPC, against one
 * server and one dataset: the service must resolve the same defaults, so the answers agree.
 */
describe('REST and gRPC resolve the same defaults', () => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpc: ApiClient;
  const data = plantedClusters({ seed: 4, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.5 });
  const vector = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));

  beforeAll(async () => {
    h = await startApi(BACKENDS[BACKENDS.length - 1]);
    http = request(h.service.http.server);
    grpc = new ApiClient(h.service.grpc.port, h.keys.admin);
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'shared', dimension: DIM, k: 4, settings: { minItemsForFit: N } }).expect(201);
    const items = Array.from({ length: N }, (_, i) => ({ externalId: `i${String(i).padStart(3, '0')}`, embedding: vector(i) }));
    const ingest = await http.post('/v1/datasets/shared/items').set('authorization', bearer(h.keys.writer)).send({ items }).expect(200);
    const views = await grpc.stream('WatchJob', { id: ingest.body.scheduledJobId });
    expect(views.at(-1)!.state).toBe('JOB_STATE_SUCCEEDED');
  }, 120_000);

  afterAll(async () => {
    grpc?.close();
    await h?.close();
  });

  it('CreateDataset: the same settings and k', async () => {
    const rest = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'minimal-rest', dimension: DIM }).expect(201);
    const overGrpc = await grpc.unary('CreateDataset', { name: 'minimal-grpc', dimension: DIM });
    expect(withoutOneofNames(overGrpc.settings)).toEqual(rest.body.settings);
    expect(overGrpc.k ?? null).toBe(rest.body.k);
  });

  it('CreateDataset: every setting given over gRPC arrives like the same setting over REST', async () => {
    const settings = { seed: 3, minItemsForFit: 7, autoRefit: false, refit: { maxDrift: 0.5 }, duplicateEpsilon: 0.2, maxIterations: 4, tolerance: 0.01 };
    const rest = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'set-rest', dimension: DIM, settings }).expect(201);
    const overGrpc = await grpc.unary('CreateDataset', { name: 'set-grpc', dimension: DIM, settings });
    expect(rest.body.settings).toMatchObject(settings);
    expect(withoutOneofNames(overGrpc.settings)).toEqual(rest.body.settings);
  });

  it('Select: order, balance and seed default alike', async () => {
    const rest = await http.get('/v1/datasets/shared/selection').query({ fraction: 0.3 }).set('authorization', bearer(h.keys.reader)).expect(200);
    const messages = await grpc.stream('Select', { dataset: 'shared', fraction: 0.3 });
    expect(rest.body.externalIds).toHaveLength(Math.round(0.3 * N));
    expect(messages.flatMap((m) => m.externalIds as string[])).toEqual(rest.body.externalIds);
    expect(messages[0].summary).toMatchObject({ prototypeVersion: rest.body.prototypeVersion, total: rest.body.total, matched: rest.body.matched, size: rest.body.size, dedup: null });
    // Both defaulted to auto and it chose the same policy.
    expect(rest.body.policy.auto).not.toBeNull();
    const { order, balance } = rest.body.policy;
    expect(messages[0].summary.policy).toMatchObject({ order: `SELECTION_ORDER_${order.toUpperCase()}`, balance: `BALANCE_${balance.toUpperCase()}` });
  });

  it('ScoreBatch: the same applied policy without one', async () => {
    const candidates = [{ externalId: 'new', embedding: vector(5) }];
    const rest = await http.post('/v1/datasets/shared/score').set('authorization', bearer(h.keys.reader)).send({ items: candidates }).expect(200);
    const overGrpc = await grpc.unary('ScoreBatch', { dataset: 'shared', candidates });
    const { order, fraction, balance, seed, epsilon } = rest.body.policy;
    expect(overGrpc.policy).toMatchObject({ order: `SELECTION_ORDER_${order.toUpperCase()}`, fraction, balance: `BALANCE_${balance.toUpperCase()}`, seed, epsilon });
    expect(rest.body.policy.auto).toMatchObject({ order, balance });
    expect(overGrpc.items[0].decision).toBe(`DECISION_${rest.body.items[0].decision.toUpperCase()}`);
  });

  it('FindDuplicates: the same epsilon (the dataset’s)', async () => {
    // The job each transport queues without an ε runs at the dataset's, and both read that run back.
    const restJob = await http.post('/v1/datasets/shared/duplicates/jobs').set('authorization', bearer(h.keys.writer)).expect(202);
    const grpcJob = await grpc.unary('RequestDedup', { dataset: 'shared' });
    expect(grpcJob.id).toBe(restJob.body.id);
    const views = await grpc.stream('WatchJob', { id: restJob.body.id });
    expect(views.at(-1)!.state).toBe('JOB_STATE_SUCCEEDED');
    const rest = await http.get('/v1/datasets/shared/duplicates').set('authorization', bearer(h.keys.reader)).expect(200);
    const overGrpc = await grpc.unary('FindDuplicates', { dataset: 'shared' });
    const settings = await http.get('/v1/datasets/shared').set('authorization', bearer(h.keys.reader)).expect(200);
    expect(rest.body.epsilon).toBe(settings.body.settings.duplicateEpsilon);
    expect(overGrpc.epsilon).toBe(rest.body.epsilon);
    expect(overGrpc.jobId).toBe(rest.body.jobId);
    expect(overGrpc.duplicateCount).toBe(rest.body.duplicateCount);
  });
});
