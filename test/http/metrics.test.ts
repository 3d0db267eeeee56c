import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/backends.js';
import { parsePrometheusText, sampleValue, type Sample } from '../helpers/prometheus.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { ApiClient } from '../grpc/client.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 4;
const ITEMS_ROUTE = '/v1/datasets/:dataset/items';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Parses strictly and checks every sample belongs to a family with a TYPE line. */
function parseChecked(text: string): Sample[] {
  const { samples, types } = parsePrometheusText(text);
  for (const s of samples) {
    const family = types.has(s.name) ? s.name : s.name.replace(/_(bucket|sum|count)$/, '');
    expect(types.has(family), `TYPE of ${s.name}`).toBe(true);
  }
  return samples;
}

describe.each(BACKENDS)('Prometheus metrics on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpcClient: ApiClient;

  async function scrape(): Promise<Sample[]> {
    const res = await http.get('/metrics').set('authorization', bearer(h.keys.admin)).expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseChecked(res.text);
  }

  async function waitJob(jobId: string) {
    for (let attempt = 0; attempt < 400; attempt++) {
      const res = await http.get(`/v1/jobs/${jobId}`).set('authorization', bearer(h.keys.admin)).expect(200);
      if (res.body.state === 'succeeded' || res.body.state === 'failed') return res.body;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`job ${jobId} did not finish`);
  }

  beforeAll(async () => {
    h = await startApi(backend);
    http = request(h.service.http.server);
    grpcClient = new ApiClient(h.service.grpc.port, h.keys.admin);
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'm', dimension: DIM }).expect(201);
  });
  afterAll(async () => {
    grpcClient?.close();
    await h?.close();
  });

  it('guards /metrics on the main port with an admin key', async () => {
    expect((await http.get('/metrics').expect(401)).body.error.code).toBe('MISSING_API_KEY');
    expect((await http.get('/metrics').set('authorization', bearer(h.keys.reader)).expect(403)).body.error.code).toBe('INSUFFICIENT_SCOPE');
    await scrape();
  });

  it('serves valid exposition text with the process, pool and queue metrics', async () => {
    const samples = await scrape();
    const names = new Set(samples.map((s) => s.name));
    for (const name of [
      'protoprune_process_cpu_user_seconds_total',
      'protoprune_nodejs_heap_size_used_bytes',
      'protoprune_embedding_queue_depth',
      'protoprune_db_pool_connections',
      'protoprune_db_pool_idle_connections',
      'protoprune_db_pool_waiting',
    ]) {
      expect(names.has(name), name).toBe(true);
    }
    expect(sampleValue(samples, 'protoprune_db_pool_connections', { backend: backend.name })).toBeGreaterThanOrEqual(1);
  });

  it('counts REST requests by route pattern and ingested items by outcome', async () => {
    const before = await scrape();
    const items = [
      { externalId: 'a', embedding: [1, 0, 0, 0] },
      { externalId: 'b', embedding: [0, 1, 0, 0] },
      { externalId: 'c', embedding: Buffer.from(Float32Array.from([0, 0, 1, 0]).buffer).toString('base64') },
      { externalId: 'bad', embedding: [0, 0, 0, 0] },
    ];
    const res = await http.post('/v1/datasets/m/items').set('authorization', bearer(h.keys.writer)).send({ items }).expect(200);
    expect(res.body.counts).toEqual({ stored: 3, updated: 0, failed: 1 });
    await http.post('/v1/datasets/m/items').set('authorization', bearer(h.keys.writer)).send({ items: [items[0]] }).expect(200);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => sampleValue(after, name, labels) - sampleValue(before, name, labels);
    const route = { route: ITEMS_ROUTE, method: 'POST', status_code: '200' };
    expect(delta('protoprune_http_request_duration_seconds_count', route)).toBe(2);
    expect(delta('protoprune_http_request_duration_seconds_bucket', { ...route, le: '+Inf' })).toBe(2);
    // The raw URL never becomes a label value.
    expect(after.some((s) => s.labels.route === '/v1/datasets/m/items')).toBe(false);
    expect(delta('protoprune_ingest_items_total', { transport: 'rest', outcome: 'stored' })).toBe(3);
    expect(delta('protoprune_ingest_items_total', { transport: 'rest', outcome: 'updated' })).toBe(1);
    expect(delta('protoprune_ingest_items_total', { transport: 'rest', outcome: 'failed' })).toBe(1);
    // 5 vectors of 4 float32 values.
    expect(delta('protoprune_ingest_payload_bytes_total', { transport: 'rest' })).toBe(5 * DIM * 4);
    // Unmatched URLs share one label value.
    await http.get('/no/such/path').expect(404);
    expect(sampleValue(await scrape(), 'protoprune_http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' })).toBeGreaterThanOrEqual(1);
  });

  it('times gRPC calls by method and status, and counts gRPC ingests', async () => {
    const before = await scrape();
    await grpcClient.unary('ListDatasets', {});
    await grpcClient.withKey(undefined).fails('ListDatasets', {});
    await grpcClient.stream('Select', { dataset: 'm', order: 'hardest', fraction: 1 }).catch(() => undefined);
    const answer = await grpcClient.ingest([{ dataset: 'm', items: [{ externalId: 'g1', embedding: [1, 1, 0, 0] }, { externalId: 'g2', embeddingF32le: Buffer.alloc(6) }] }]);
    expect([answer.stored, answer.failed]).toEqual([1, 1]);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => sampleValue(after, name, labels) - sampleValue(before, name, labels);
    expect(delta('protoprune_grpc_call_duration_seconds_count', { method: 'ListDatasets', code: 'OK' })).toBe(1);
    expect(delta('protoprune_grpc_call_duration_seconds_count', { method: 'ListDatasets', code: 'UNAUTHENTICATED' })).toBe(1);
    expect(delta('protoprune_grpc_call_duration_seconds_count', { method: 'Select' })).toBe(1);
    expect(delta('protoprune_grpc_call_duration_seconds_count', { method: 'IngestItems', code: 'OK' })).toBe(1);
    expect(delta('protoprune_ingest_items_total', { transport: 'grpc', outcome: 'stored' })).toBe(1);
    expect(delta('protoprune_ingest_items_total', { transport: 'grpc', outcome: 'failed' })).toBe(1);
    expect(delta('protoprune_ingest_payload_bytes_total', { transport: 'grpc' })).toBe(DIM * 4 + 6);
  });

  it('records encoder batches, and refit phases and job counts when a refit finishes', async () => {
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'img' }).expect(201);
    const before = await scrape();
    const images = await Promise.all([1, 2, 3].map((seed) => jpeg(64, 48, sceneRaw(64, 48, seed))));
    await http
      .post('/v1/datasets/img/items')
      .set('authorization', bearer(h.keys.writer))
      .send({ items: images.map((image, i) => ({ externalId: `i${i}`, image: image.toString('base64') })) })
      .expect(200);
    const refit = await http.post('/v1/datasets/m/prototypes/refit').set('authorization', bearer(h.keys.writer)).expect(202);
    const job = await waitJob(refit.body.id);
    expect(job.error).toBeNull();
    expect(job.state).toBe('succeeded');
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => sampleValue(after, name, labels) - sampleValue(before, name, labels);
    expect(delta('protoprune_embedding_batch_size_sum')).toBe(3);
    expect(delta('protoprune_embedding_batch_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(delta('protoprune_ingest_payload_bytes_total', { transport: 'rest' })).toBe(images.reduce((s, b) => s + b.length, 0));
    expect(delta('protoprune_jobs_finished_total', { kind: 'refit', state: 'succeeded' })).toBe(1);
    expect(delta('protoprune_job_duration_seconds_count', { kind: 'refit', state: 'succeeded' })).toBe(1);
    for (const phase of ['read', 'fit', 'rescore_write', 'switch', 'total']) {
      expect(delta('protoprune_refit_phase_duration_seconds_count', { phase }), phase).toBe(1);
    }
  });

  it('passes promtool check metrics (Prometheus\'s own linter) once every family has samples', async () => {
    const res = await http.get('/metrics').set('authorization', bearer(h.keys.admin)).expect(200);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8' });
    if (lint.error) throw new Error(`promtool not runnable (${lint.error.message}): apt-get install prometheus (.ci/run does)`);
    // promtool prints one line per problem (naming, units, missing HELP) and exits non-zero on any.
    expect(`${lint.stdout}${lint.stderr}`.trim()).toBe('');
    expect(lint.status).toBe(0);
  });
});

describe('metrics configuration', () => {
  const backend = BACKENDS[0];

  it('METRICS_PORT serves /metrics alone, without auth, on its own port; the main port no longer does', async () => {
    const port = await freePort();
    const h = await startApi(backend, { METRICS_PORT: String(port) });
    try {
      expect(h.service.metricsPort).toBe(port);
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      const samples = parseChecked(await res.text());
      expect(samples.some((s) => s.name === 'protoprune_db_pool_connections')).toBe(true);
      expect((await fetch(`http://127.0.0.1:${port}/v1/datasets`)).status).toBe(404);
      const http = request(h.service.http.server);
      await http.get('/metrics').set('authorization', bearer(h.keys.admin)).expect(404);
      // Requests on the main port are still measured.
      await http.get('/healthz').expect(200);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(sampleValue(parsePrometheusText(text).samples, 'protoprune_http_request_duration_seconds_count', { route: '/healthz' })).toBe(1);
    } finally {
      await h.close();
    }
  });

  it('METRICS_ENABLED=false serves no /metrics; AUTH_DISABLED opens it on the main port', async () => {
    const off = await startApi(backend, { METRICS_ENABLED: 'false' });
    try {
      expect(off.service.metrics).toBeNull();
      await request(off.service.http.server).get('/metrics').set('authorization', bearer(off.keys.admin)).expect(404);
    } finally {
      await off.close();
    }
    const open = await startApi(backend, { AUTH_DISABLED: 'true' });
    try {
      parseChecked((await request(open.service.http.server).get('/metrics').expect(200)).text);
    } finally {
      await open.close();
    }
  });
});
