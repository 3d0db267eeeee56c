import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { streamDuplicates } from '../../src/service/dedup.js';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { mintApiKey, OPERATOR } from '../../src/service/auth.js';
import { getItem } from '../../src/service/items.js';
import { scoreBatch } from '../../src/service/score.js';
import { selectItems } from '../../src/service/selection.js';
import { datasetStats } from '../../src/service/stats.js';
import { BACKENDS, type TestBackend } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { channelMeanNchw } from '../embedding/tiny-models.js';
import { ApiClient, f32le, listServicesByReflection, type Msg } from './client.js';

const DIM = 16;
const CLUSTERS = 8;
const PER_CLUSTER = 25;
const N = CLUSTERS * PER_CLUSTER;
const MAX_ITEMS = 50;

function row(points: Float32Array, i: number): number[] {
  return Array.from(points.subarray(i * DIM, (i + 1) * DIM));
}

/** Environment of a test service: free ports, a fresh database, a tiny real image encoder (3-d channel means). */
function testConfig(modelPath: string, modelsDir: string, extra: Record<string, string> = {}) {
  return loadConfig({
    PORT: '0',
    GRPC_PORT: '0',
    HOST: '127.0.0.1',
    JOB_POLL_MS: '50',
    MAX_ITEMS_PER_REQUEST: String(MAX_ITEMS),
    RATE_LIMIT_PER_MINUTE: '0',
    MODELS_DIR: modelsDir,
    EMBEDDING_MODEL_PATH: modelPath,
    EMBEDDING_MODEL_NAME: 'channel-mean',
    EMBEDDING_MODEL_SIZE: '32',
    EMBEDDING_MODEL_MEAN: '0,0,0',
    EMBEDDING_MODEL_STD: '1,1,1',
    ...extra,
  });
}

async function watchUntilDone(client: ApiClient, id: string): Promise<Msg[]> {
  return client.stream('WatchJob', { id });
}

describe.each(BACKENDS.map((b) => [b.name, b] as [string, TestBackend]))('gRPC API (%s)', (_name, backend) => {
  let service: RunningService;
  let cleanup: () => Promise<void>;
  let dir: string;
  let modelPath: string;
  let admin: ApiClient;
  let reader: ApiClient;
  let writer: ApiClient;
  let otherOnly: ApiClient;
  const planted = plantedClusters({ seed: 11, clusters: CLUSTERS, perCluster: PER_CLUSTER, dim: DIM, noise: 0.4 });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'protoprune-grpc-'));
    modelPath = path.join(dir, 'mean.onnx');
    await writeFile(modelPath, channelMeanNchw(32, 32));
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    service = await startService({ ...testConfig(modelPath, dir), database: fresh.config, dataDir: fresh.dataDir }, silentLogger);
    const port = service.grpc.port;
    const mint = async (scopes: string[], datasets?: string[]) => (await mintApiKey(service.db, { name: scopes.join('+'), scopes, datasets }, OPERATOR)).secret;
    admin = new ApiClient(port, await mint(['admin']));
    reader = admin.withKey(await mint(['read']));
    writer = admin.withKey(await mint(['write']));
    otherOnly = admin.withKey(await mint(['admin'], ['other']));
  });

  afterAll(async () => {
    admin?.close();
    await service?.stop();
    await cleanup?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('lists protoprune.v1.Protoprune (and health) through server reflection', async () => {
    const services = await listServicesByReflection(service.grpc.port);
    expect(services).toContain('protoprune.v1.Protoprune');
    expect(services).toContain('grpc.health.v1.Health');
  });

  it('refuses a missing or unknown key (UNAUTHENTICATED) with the error code in trailing metadata', async () => {
    const none = await admin.withKey(undefined).fails('ListDatasets', {});
    expect(none).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'MISSING_API_KEY' });
    const wrong = await admin.withKey('pp_not-a-real-key').fails('ListDatasets', {});
    expect(wrong).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'INVALID_API_KEY' });
    const streamed = await admin.withKey(undefined).streamFails('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_HARDEST', fraction: 0.5 });
    expect(streamed).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'MISSING_API_KEY' });
    const ingest = await admin.withKey('wrong').ingestFails([{ dataset: 'vecs', items: [] }]);
    expect(ingest).toMatchObject({ code: grpc.status.UNAUTHENTICATED, errorCode: 'INVALID_API_KEY' });
  });

  it('creates a dataset (admin only), refusing a taken name and bad input', async () => {
    const forbidden = await reader.fails('CreateDataset', { name: 'vecs', dimension: DIM });
    expect(forbidden).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'INSUFFICIENT_SCOPE', errorDetails: { required: 'admin' } });

    const created = await admin.unary('CreateDataset', {
      name: 'vecs',
      dimension: DIM,
      k: CLUSTERS,
      // No automatic refits: the test decides when versions change (the first fit still happens).
      settings: { minItemsForFit: 100, seed: 7, autoRefit: false, refit: { arrivedFraction: 0.9 } },
    });
    expect(created).toMatchObject({ name: 'vecs', dimension: DIM, k: CLUSTERS, model: null });
    expect(created.settings).toMatchObject({ minItemsForFit: 100, seed: 7, autoRefit: false, duplicateEpsilon: 0.05, refit: { arrivedFraction: 0.9, maxDrift: 0.05 } });
    expect(created.activeVersion).toBeUndefined();
    expect(Date.parse(created.createdAt)).toBeGreaterThan(Date.now() - 60_000);

    const again = await admin.fails('CreateDataset', { name: 'vecs', dimension: DIM });
    expect(again).toMatchObject({ code: grpc.status.ALREADY_EXISTS, errorCode: 'DATASET_EXISTS', errorDetails: { name: 'vecs' } });
    const badName = await admin.fails('CreateDataset', { name: '-bad name', dimension: DIM });
    expect(badName).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_NAME' });
    const badDim = await admin.fails('CreateDataset', { name: 'zero', dimension: 0 });
    expect(badDim).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_DIMENSION' });
    await admin.unary('CreateDataset', { name: 'other', dimension: 4 });
  });

  it('gets and lists datasets, limited to those the key may access', async () => {
    const got = await reader.unary('GetDataset', { name: 'vecs' });
    expect(got).toMatchObject({ name: 'vecs', dimension: DIM });
    const missing = await reader.fails('GetDataset', { name: 'nope' });
    expect(missing).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DATASET_NOT_FOUND', errorDetails: { name: 'nope' } });
    const all = await reader.unary('ListDatasets', {});
    expect(all.datasets.map((d: Msg) => d.name)).toEqual(['other', 'vecs']);
    const limited = await otherOnly.unary('ListDatasets', {});
    expect(limited.datasets.map((d: Msg) => d.name)).toEqual(['other']);
    const denied = await otherOnly.fails('GetDataset', { name: 'vecs' });
    expect(denied).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'DATASET_FORBIDDEN' });
  });

  let firstFitJob: string;

  it('ingests a client stream batch by batch: both vector encodings, bad items failing alone, counts and a scheduled first fit', async () => {
    const messages: Msg[] = [];
    for (let m = 0; m < N / 40; m++) {
      const items: Msg[] = [];
      for (let i = m * 40; i < (m + 1) * 40; i++) {
        const vector = row(planted.points, i);
        items.push(
          i % 2 === 0
            ? { externalId: `item-${i}`, embedding: vector, metadataJson: JSON.stringify({ i, cluster: planted.labels[i] }) }
            : { externalId: `item-${i}`, embeddingF32le: f32le(vector) },
        );
      }
      if (m === 1) {
        items.push({ externalId: 'short', embedding: [1, 2, 3] });
        items.push({ externalId: 'bad-meta', embedding: row(planted.points, 0), metadataJson: '{not json' });
        items.push({ externalId: 'both', embedding: row(planted.points, 0), embeddingF32le: f32le(row(planted.points, 0)) });
        items.push({ externalId: 'ragged', embeddingF32le: Buffer.alloc(7) });
      }
      messages.push({ dataset: 'vecs', items });
    }
    messages.push({ dataset: 'vecs', items: [] });
    const result = await writer.ingest(messages);
    expect(result).toMatchObject({ dataset: 'vecs', stored: N, updated: 0, failed: 4, batches: N / 40 + 1 });
    expect(result.items).toHaveLength(N + 4);
    const byId = new Map<string, Msg>(result.items.map((r: Msg) => [r.externalId, r]));
    expect(byId.get('short')).toMatchObject({ status: 'ITEM_STATUS_ERROR', errorCode: 'DIMENSION_MISMATCH' });
    expect(byId.get('bad-meta')).toMatchObject({ status: 'ITEM_STATUS_ERROR', errorCode: 'INVALID_METADATA' });
    expect(byId.get('both')).toMatchObject({ status: 'ITEM_STATUS_ERROR', errorCode: 'INVALID_ITEM' });
    expect(byId.get('ragged')).toMatchObject({ status: 'ITEM_STATUS_ERROR', errorCode: 'INVALID_ENCODING' });
    // Stream order is kept: message 2's valid items, then its four failures, then message 3's items.
    expect(result.items.slice(78, 86).map((r: Msg) => r.externalId)).toEqual(['item-78', 'item-79', 'short', 'bad-meta', 'both', 'ragged', 'item-80', 'item-81']);
    expect(result.items[0]).toMatchObject({ externalId: 'item-0', status: 'ITEM_STATUS_STORED' });
    expect(result.items[0].score).toBeUndefined(); // no prototypes yet when it arrived
    expect(result.scheduledJobIds).toHaveLength(1);
    firstFitJob = result.scheduledJobIds[0];

    const states = await watchUntilDone(reader, firstFitJob);
    expect(states.length).toBeGreaterThanOrEqual(1);
    const last = states[states.length - 1];
    expect(last).toMatchObject({ id: firstFitJob, dataset: 'vecs', kind: 'refit', state: 'JOB_STATE_SUCCEEDED' });
    expect(JSON.parse(last.resultJson)).toMatchObject({ version: 1, k: CLUSTERS });
    expect(states.slice(0, -1).every((s) => s.state !== 'JOB_STATE_SUCCEEDED')).toBe(true);

    const job = await reader.unary('GetJob', { id: firstFitJob });
    expect(job).toMatchObject({ id: firstFitJob, state: 'JOB_STATE_SUCCEEDED', progress: expect.any(Object) });
    expect(job.finishedAt).not.toBe('');
  });

  it('ingests items after the first fit with scores, and replaces an existing item', async () => {
    const result = await writer.ingest([{ dataset: 'vecs', items: [{ externalId: 'item-0', embedding: row(planted.points, 0), metadataJson: '{"replaced":true}' }] }]);
    expect(result).toMatchObject({ stored: 0, updated: 1, failed: 0, prototypeVersion: 1 });
    expect(result.items[0].score).toBeGreaterThanOrEqual(0);
    expect(result.items[0].cluster).toBeGreaterThanOrEqual(0);
  });

  it('refuses bad ingest streams: read scope, unknown dataset, mixed datasets, too many items, an empty stream', async () => {
    const item = { externalId: 'x', embedding: row(planted.points, 1) };
    expect(await reader.ingestFails([{ dataset: 'vecs', items: [item] }])).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'INSUFFICIENT_SCOPE' });
    expect(await writer.ingestFails([{ dataset: 'nope', items: [item] }])).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DATASET_NOT_FOUND' });
    expect(await otherOnly.ingestFails([{ dataset: 'vecs', items: [item] }])).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'DATASET_FORBIDDEN' });
    const mixed = await writer.ingestFails([
      { dataset: 'vecs', items: [] },
      { dataset: 'other', items: [] },
    ]);
    expect(mixed).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'DATASET_MISMATCH' });
    const many = Array.from({ length: MAX_ITEMS + 1 }, (_, i) => ({ externalId: `many-${i}`, embedding: row(planted.points, i) }));
    const tooMany = await writer.ingestFails([{ dataset: 'vecs', items: many }]);
    expect(tooMany).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, errorCode: 'TOO_MANY_ITEMS', errorDetails: { max: MAX_ITEMS } });
    expect(await writer.ingestFails([])).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'EMPTY_INGEST' });
    const stats = await reader.unary('GetStats', { dataset: 'vecs' });
    expect(stats.itemCount).toBe(N); // nothing of the refused streams was stored
  });

  it('streams a selection in chunks, equal to the service selection for the same request', async () => {
    const request = { order: 'hardest' as const, fraction: 0.3, balance: 'cluster' as const, seed: 3 };
    const messages = await reader.stream('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_HARDEST', fraction: 0.3, balance: 'BALANCE_CLUSTER', seed: 3, chunkSize: 7 });
    const expected = await selectItems(service.services.ctx, 'vecs', request);
    expect(expected.externalIds.length).toBe(60);
    expect(messages[0].summary).toMatchObject({ prototypeVersion: expected.version, total: N, matched: N, size: 60, dedup: null });
    expect(messages.slice(1).every((m) => m.summary === null)).toBe(true);
    expect(messages.every((m) => m.externalIds.length <= 7)).toBe(true);
    expect(messages).toHaveLength(Math.ceil(60 / 7));
    expect(messages.flatMap((m) => m.externalIds)).toEqual(expected.externalIds);

    const byCount = await reader.stream('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_STRATIFIED', count: 25, bins: 4, outlierFraction: 0.1 });
    const expectedByCount = await selectItems(service.services.ctx, 'vecs', { order: 'stratified', count: 25, bins: 4, outlierFraction: 0.1 });
    expect(byCount).toHaveLength(1);
    expect(byCount[0].externalIds).toEqual(expectedByCount.externalIds);

    const empty = await reader.stream('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_EASIEST', count: 0 });
    expect(empty).toMatchObject([{ summary: { prototypeVersion: expected.version, total: N, matched: N, size: 0, dedup: null, imbalance: null }, externalIds: [] }]);
    expect(empty).toHaveLength(1);
  });

  it('refuses bad selections with INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION', async () => {
    const outside = await reader.streamFails('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_HARDEST', fraction: 1.5 });
    expect(outside).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_SELECTION', errorDetails: { field: 'fraction' } });
    const zero = await reader.streamFails('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_HARDEST', fraction: 0 });
    expect(zero).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_SELECTION' });
    // No order is the default order (test/contract/defaults.test.ts); an enum value the API lacks is refused.
    const unknownOrder = await reader.streamFails('Select', { dataset: 'vecs', order: 99, fraction: 0.5 });
    expect(unknownOrder).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_SELECTION', errorDetails: { field: 'order' } });
    const unknown = await reader.streamFails('Select', { dataset: 'nope', order: 'SELECTION_ORDER_HARDEST', fraction: 0.5 });
    expect(unknown).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DATASET_NOT_FOUND' });
    const unfitted = await reader.streamFails('Select', { dataset: 'other', order: 'SELECTION_ORDER_HARDEST', fraction: 0.5 });
    expect(unfitted).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, errorCode: 'NO_PROTOTYPES' });
    const denied = await otherOnly.streamFails('Select', { dataset: 'vecs', order: 'SELECTION_ORDER_HARDEST', fraction: 0.5 });
    expect(denied).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'DATASET_FORBIDDEN' });
  });

  it('scores a batch like the service does, with per-candidate failures', async () => {
    const stored = row(planted.points, 3);
    const fresh = row(planted.points, 5).map((x, j) => x + (j % 3 === 0 ? 0.2 : -0.1));
    const response = await reader.unary('ScoreBatch', {
      dataset: 'vecs',
      candidates: [
        { externalId: 'copy-of-3', embedding: stored },
        { externalId: 'fresh', embeddingF32le: f32le(fresh) },
        { externalId: 'short', embedding: [1, 0] },
        { externalId: 'nothing' },
      ],
      policy: { order: 'SELECTION_ORDER_EASIEST', fraction: 0.5, epsilon: 0.01 },
    });
    const expected = await scoreBatch(
      service.services.ctx,
      'vecs',
      [
        { externalId: 'copy-of-3', embedding: stored },
        { externalId: 'fresh', embedding: new Float32Array(fresh) },
      ],
      { order: 'easiest', fraction: 0.5, epsilon: 0.01 },
    );
    expect(response.prototypeVersion).toBe(expected.prototypeVersion);
    expect(response.policy).toMatchObject({ order: 'SELECTION_ORDER_EASIEST', fraction: 0.5, balance: 'BALANCE_NONE', seed: 0, epsilon: 0.01 });
    expect(response.items).toHaveLength(4);
    for (const [i, e] of expected.items.entries()) {
      if (e.status !== 'scored') throw new Error('expected a scored candidate');
      const got = response.items[i];
      expect(got).toMatchObject({ externalId: e.externalId, status: 'CANDIDATE_STATUS_SCORED', cluster: e.cluster, duplicate: e.duplicate });
      expect(got.score).toBeCloseTo(e.score, 6);
      expect(got.percentile).toBeCloseTo(e.percentile, 9);
      expect(got.decision).toBe(e.decision === 'keep' ? 'DECISION_KEEP' : 'DECISION_SKIP');
      expect(got.nearest?.externalId).toBe(e.nearest?.externalId);
    }
    expect(response.items[0]).toMatchObject({ duplicate: true, decision: 'DECISION_SKIP', reason: 'DECISION_REASON_NEAR_DUPLICATE', nearest: { externalId: 'item-3' } });
    expect(response.items[2]).toMatchObject({ status: 'CANDIDATE_STATUS_ERROR', errorCode: 'DIMENSION_MISMATCH' });
    expect(response.items[3]).toMatchObject({ status: 'CANDIDATE_STATUS_ERROR', errorCode: 'INVALID_ITEM' });

    const bad = await reader.fails('ScoreBatch', { dataset: 'vecs', candidates: [], policy: { order: 'SELECTION_ORDER_HARDEST', fraction: 2 } });
    expect(bad).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_SELECTION' });
    const many = Array.from({ length: MAX_ITEMS + 1 }, (_, i) => ({ externalId: `c${i}`, embedding: stored }));
    expect(await reader.fails('ScoreBatch', { dataset: 'vecs', candidates: many })).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, errorCode: 'TOO_MANY_ITEMS' });
    expect(await reader.withKey(undefined).fails('ScoreBatch', { dataset: 'vecs', candidates: [] })).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it('reports prototypes and statistics like the service', async () => {
    const prototypes = await reader.unary('GetPrototypes', { dataset: 'vecs' });
    expect(prototypes).toMatchObject({ version: 1, k: CLUSTERS, refitJob: null });
    expect(prototypes.clusterSizes.reduce((a: number, b: number) => a + b, 0)).toBe(N);
    expect(prototypes.drift.max).toBeGreaterThanOrEqual(prototypes.drift.mean);
    const before = await reader.unary('GetPrototypes', { dataset: 'other' });
    expect(before.version).toBeUndefined();
    expect(before.clusterSizes).toEqual([]);

    const stats = await reader.unary('GetStats', { dataset: 'vecs' });
    const expected = await datasetStats(service.services.ctx, 'vecs');
    expect(stats).toMatchObject({
      dataset: 'vecs',
      itemCount: expected.itemCount,
      scoredCount: expected.scoredCount,
      prototypeVersion: 1,
      k: CLUSTERS,
      clusterSizes: expected.clusterSizes,
      histogram: { binWidth: expected.histogram.binWidth, counts: expected.histogram.counts },
      lastRefit: { version: 1 },
      ingest: { lastHour: expected.ingest.lastHour, lastDay: expected.ingest.last24Hours },
    });
    expect(stats.ingest.hourly.reduce((a: number, h: Msg) => a + h.items, 0)).toBe(N);
    expect(await otherOnly.fails('GetStats', { dataset: 'vecs' })).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await reader.fails('GetPrototypes', { dataset: 'nope' })).toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('requests a refit (write) and watches it to completion', async () => {
    expect(await reader.fails('RequestRefit', { dataset: 'vecs' })).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'INSUFFICIENT_SCOPE' });
    const job = await writer.unary('RequestRefit', { dataset: 'vecs' });
    expect(job).toMatchObject({ dataset: 'vecs', kind: 'refit' });
    expect(['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING']).toContain(job.state);
    const states = await watchUntilDone(reader, job.id);
    expect(states[states.length - 1]).toMatchObject({ id: job.id, state: 'JOB_STATE_SUCCEEDED' });
    expect(JSON.parse(states[states.length - 1].resultJson)).toMatchObject({ version: 2, previousVersion: 1 });
    expect((await reader.unary('GetDataset', { name: 'vecs' })).activeVersion).toBe(2);

    expect(await otherOnly.fails('GetJob', { id: job.id })).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'DATASET_FORBIDDEN' });
    expect(await otherOnly.streamFails('WatchJob', { id: job.id })).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(await reader.fails('GetJob', { id: '00000000-0000-4000-8000-000000000000' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'JOB_NOT_FOUND' });
    expect(await reader.streamFails('WatchJob', { id: 'not-a-uuid' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'JOB_NOT_FOUND' });
  });

  it('runs SemDeDup as a job and pages and streams its groups like the service', async () => {
    await writer.ingest([{ dataset: 'vecs', items: [{ externalId: 'twin-of-7', embedding: row(planted.points, 7) }, { externalId: 'twin-of-9', embedding: row(planted.points, 9) }] }]);
    expect(await reader.fails('FindDuplicates', { dataset: 'vecs', epsilon: 0.0001 })).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, errorCode: 'DEDUP_NOT_RUN' });
    expect(await reader.fails('RequestDedup', { dataset: 'vecs', epsilon: 0.0001 })).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    const job = await writer.unary('RequestDedup', { dataset: 'vecs', epsilon: 0.0001 });
    expect(job).toMatchObject({ kind: 'dedup', dataset: 'vecs' });
    const states = await watchUntilDone(reader, job.id);
    expect(states[states.length - 1].state).toBe('JOB_STATE_SUCCEEDED');
    const streamed = await reader.stream('StreamDuplicates', { dataset: 'vecs', epsilon: 0.0001 });
    const groups = streamed.flatMap((m: Msg) => m.groups);
    expect(streamed[0]).toMatchObject({ jobId: job.id, epsilon: 0.0001, groupCount: groups.length, duplicateCount: 2 });
    const expected = await streamDuplicates(service.services.ctx, 'vecs', { jobId: job.id });
    const viaService = [];
    for await (const chunk of expected.groups) viaService.push(...chunk);
    expect(groups).toEqual(viaService);
    for (const twin of [7, 9]) {
      const group = groups.find((g: Msg) => [g.kept, ...g.duplicates].includes(`twin-of-${twin}`));
      expect([group.kept, ...group.duplicates].sort()).toEqual([`item-${twin}`, `twin-of-${twin}`]);
      expect(group.similarities[0]).toBeGreaterThan(0.9999);
    }
    // Paged one group at a time: the same groups, the token pins the run.
    const first = await reader.unary('FindDuplicates', { dataset: 'vecs', epsilon: 0.0001, pageSize: 1 });
    expect(first.groups).toEqual([groups[0]]);
    const second = await reader.unary('FindDuplicates', { dataset: 'vecs', pageToken: first.nextPageToken, pageSize: 1 });
    expect(second.groups).toEqual([groups[1]]);
    expect(second.nextPageToken).toBe('');
    expect(await reader.fails('FindDuplicates', { dataset: 'vecs', epsilon: 3 })).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_EPSILON' });
    expect(await reader.fails('FindDuplicates', { dataset: 'vecs', pageToken: 'garbage' })).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_CURSOR' });
    expect(await reader.fails('FindDuplicates', { dataset: 'vecs', pageSize: 0 })).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'INVALID_PAGE_SIZE' });
    expect(await reader.fails('FindDuplicates', { dataset: 'vecs', jobId: 'not-a-job' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DEDUP_RUN_NOT_FOUND' });
  });

  it('gets and deletes single items', async () => {
    const item = await reader.unary('GetItem', { dataset: 'vecs', externalId: 'item-2' });
    const expected = await getItem(service.services.ctx, 'vecs', 'item-2');
    expect(item).toMatchObject({ externalId: 'item-2', cluster: expected.cluster, prototypeVersion: 2, createdAt: expected.createdAt.toISOString() });
    expect(item.score).toBeCloseTo(expected.score!, 6);
    expect(JSON.parse(item.metadataJson)).toEqual({ i: 2, cluster: planted.labels[2] });
    expect(JSON.parse((await reader.unary('GetItem', { dataset: 'vecs', externalId: 'item-0' })).metadataJson)).toEqual({ replaced: true });

    expect(await reader.fails('DeleteItem', { dataset: 'vecs', externalId: 'item-2' })).toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    await expect(writer.unary('DeleteItem', { dataset: 'vecs', externalId: 'item-2' })).resolves.toEqual({});
    expect(await reader.fails('GetItem', { dataset: 'vecs', externalId: 'item-2' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ITEM_NOT_FOUND' });
    expect(await writer.fails('DeleteItem', { dataset: 'vecs', externalId: 'item-2' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'ITEM_NOT_FOUND' });
  });

  it('creates an image dataset from the server encoder and ingests images, a corrupt one failing alone', async () => {
    const created = await admin.unary('CreateDataset', { name: 'photos', settings: { minItemsForFit: 1000 } });
    expect(created).toMatchObject({ name: 'photos', dimension: 3, model: { name: 'channel-mean' } });
    expect(created.model.sha256).toMatch(/^[0-9a-f]{64}$/);
    const red = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 200, g: 20, b: 20 } } }).png().toBuffer();
    const blue = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 10, g: 30, b: 220 } } }).jpeg().toBuffer();
    const result = await writer.ingest([
      { dataset: 'photos', items: [{ externalId: 'red', image: red }, { externalId: 'junk', image: Buffer.from('not an image') }] },
      { dataset: 'photos', items: [{ externalId: 'blue', image: blue, metadataJson: '{"colour":"blue"}' }] },
    ]);
    expect(result).toMatchObject({ stored: 2, failed: 1, batches: 2 });
    expect(result.items.map((r: Msg) => r.status)).toEqual(['ITEM_STATUS_STORED', 'ITEM_STATUS_ERROR', 'ITEM_STATUS_STORED']);
    expect(result.items[1].errorCode).toMatch(/^(UNSUPPORTED_FORMAT|CORRUPT_IMAGE)$/);
    const rows = await service.db.query<{ embedding: number[] | string }>(
      `SELECT i.embedding::text AS embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'photos' AND i.external_id = 'red'`,
    );
    const vector = JSON.parse(rows[0].embedding as string) as number[];
    // The channel-mean encoder's output for a uniform red image points mostly along red.
    expect(vector[0]).toBeGreaterThan(0.9);
    // An embedding-only dataset refuses images (another model).
    const mismatch = await writer.ingestFails([{ dataset: 'vecs', items: [{ externalId: 'img', image: red }] }]);
    expect(mismatch).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, errorCode: 'MODEL_MISMATCH' });
  });

  it('deletes datasets (admin only)', async () => {
    expect(await writer.fails('DeleteDataset', { name: 'photos' })).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'INSUFFICIENT_SCOPE' });
    expect(await otherOnly.fails('DeleteDataset', { name: 'photos' })).toMatchObject({ code: grpc.status.PERMISSION_DENIED, errorCode: 'DATASET_FORBIDDEN' });
    await expect(admin.unary('DeleteDataset', { name: 'photos' })).resolves.toEqual({});
    expect(await admin.fails('GetDataset', { name: 'photos' })).toMatchObject({ code: grpc.status.NOT_FOUND });
    expect(await admin.fails('DeleteDataset', { name: 'photos' })).toMatchObject({ code: grpc.status.NOT_FOUND, errorCode: 'DATASET_NOT_FOUND' });
  });
});

describe('gRPC API limits', () => {
  let service: RunningService;
  let cleanup: () => Promise<void>;
  let dir: string;
  let client: ApiClient;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'protoprune-grpc-limits-'));
    const modelPath = path.join(dir, 'mean.onnx');
    await writeFile(modelPath, channelMeanNchw(32, 32));
    const fresh = await BACKENDS[0].fresh();
    cleanup = fresh.cleanup;
    service = await startService(
      { ...testConfig(modelPath, dir, { RATE_LIMIT_PER_MINUTE: '3', BODY_LIMIT_BYTES: '2048', REQUEST_TIMEOUT_MS: '400' }), database: fresh.config, dataDir: fresh.dataDir },
      silentLogger,
    );
    client = new ApiClient(service.grpc.port, (await mintApiKey(service.db, { name: 'limited', scopes: ['admin'] }, OPERATOR)).secret);
  });

  afterAll(async () => {
    client?.close();
    await service?.stop();
    await cleanup?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses messages over BODY_LIMIT_BYTES and requests over the per-key rate, with a retry hint', async () => {
    await client.unary('CreateDataset', { name: 'small', dimension: 4 }); // 1
    const big = await client.ingestFails([{ dataset: 'small', items: [{ externalId: 'x'.repeat(4000), embedding: [1, 0, 0, 0] }] }]); // 2
    expect(big.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    await client.unary('ListDatasets', {}); // 3 (or 2, should the oversized call be refused before counting)
    let limited;
    for (let i = 0; i < 2 && !limited; i++) {
      try {
        await client.unary('ListDatasets', {});
      } catch (error) {
        limited = error as grpc.ServiceError;
      }
    }
    expect(limited).toBeDefined();
    expect(limited!.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(limited!.metadata.get('error-code')).toEqual(['RATE_LIMITED']);
    const retryMs = Number(limited!.metadata.get('retry-after-ms')[0]);
    expect(retryMs).toBeGreaterThan(0);
    expect(retryMs).toBeLessThanOrEqual(60_000);
    // Another key has its own budget.
    const other = client.withKey((await mintApiKey(service.db, { name: 'other', scopes: ['read'] }, OPERATOR)).secret);
    await expect(other.unary('ListDatasets', {})).resolves.toMatchObject({ datasets: [{ name: 'small' }] });
  });

  it('cuts off an ingest stream whose client goes silent for longer than REQUEST_TIMEOUT_MS', async () => {
    const quiet = client.withKey((await mintApiKey(service.db, { name: 'quiet', scopes: ['write'] }, OPERATOR)).secret);
    const failure = await new Promise<grpc.ServiceError>((resolve, reject) => {
      const call = quiet.raw.IngestItems(quiet.metadata(), (error: grpc.ServiceError | null) =>
        error ? resolve(error) : reject(new Error('the stream was answered without an error')),
      ) as grpc.ClientWritableStream<Msg>;
      call.write({ dataset: 'small', items: [{ externalId: 'a', embedding: [1, 0, 0, 0] }] });
      // never ends the stream
    });
    expect(failure.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(failure.metadata.get('error-code')).toEqual(['REQUEST_TIMEOUT']);
  });
});
