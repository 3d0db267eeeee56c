import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fnv1a32, Rng } from '../../src/core/random.js';
import { createDataset } from '../../src/service/datasets.js';
import { requestRefit } from '../../src/service/refit.js';
import { selectItems } from '../../src/service/selection.js';
import { waitForJob } from '../service/harness.js';
import { BACKENDS } from '../helpers/backends.js';
import { randomUnitRows } from '../helpers/planted.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';
import { ingestItems } from '../../src/service/ingest.js';

const N = 200_000;
const DIM = 4;
/** Long ids make a buffered answer obvious: 200k × ~110 characters is ~90 MB of strings and JSON. */
const PAD = 'x'.repeat(96);
const idOf = (i: number) => `${PAD}-${String(i).padStart(7, '0')}`;

/** Order-sensitive hash of a sequence of ids, so the client keeps no strings. */
function chain(hash: number, id: string): number {
  return fnv1a32(`${hash}:${id}`);
}

// The native backend when configured (this suite is about streaming, not storage); else embedded.
const backend = BACKENDS[BACKENDS.length - 1];

describe(`streaming a 200k-id selection (${backend.name} backend)`, () => {
  let h: ApiHarness;

  beforeAll(async () => {
    h = await startApi(backend, { ANN_INDEX_BATCH: '0' });
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'big', dimension: DIM, k: 16, settings: { minItemsForFit: N + 1, autoRefit: false } });
    const vectors = randomUnitRows(new Rng(9), N, DIM);
    for (let from = 0; from < N; from += 20_000) {
      const items = Array.from({ length: 20_000 }, (_, j) => ({ externalId: idOf(from + j), embedding: vectors.subarray((from + j) * DIM, (from + j + 1) * DIM) }));
      await ingestItems(ctx, 'big', items);
    }
    const job = await requestRefit(ctx, 'big');
    expect((await waitForJob(h.service.db, job.id)).state).toBe('succeeded');
  }, 600_000);

  afterAll(async () => {
    await h?.close();
  });

  it('streams every id in policy order as NDJSON, in chunks, without holding the selection in memory', async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    let peakHeap = heapBefore;
    const sampler = setInterval(() => (peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)), 5);
    const { hash, count, chunks, headers } = await new Promise<{ hash: number; count: number; chunks: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
      const req = http.get(
        `http://127.0.0.1:${h.service.httpPort}/v1/datasets/big/selection?order=hardest&fraction=1`,
        { headers: { authorization: bearer(h.keys.reader), accept: 'application/x-ndjson' } },
        (res) => {
          let rest = '';
          let hashSoFar = 0;
          let lines = 0;
          let received = 0;
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            received++;
            const text = rest + chunk;
            const cut = text.lastIndexOf('\n');
            // A network chunk may end mid-line or hold no newline at all.
            if (cut < 0) {
              rest = text;
              return;
            }
            rest = text.slice(cut + 1);
            for (const line of text.slice(0, cut).split('\n')) {
              hashSoFar = chain(hashSoFar, (JSON.parse(line) as { externalId: string }).externalId);
              lines++;
            }
          });
          res.on('end', () => (rest === '' ? resolve({ hash: hashSoFar, count: lines, chunks: received, headers: res.headers }) : reject(new Error(`trailing bytes: ${rest}`))));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
    });
    clearInterval(sampler);
    const growthMb = (peakHeap - heapBefore) / 2 ** 20;

    expect(headers['content-type']).toContain('application/x-ndjson');
    expect(headers['content-length']).toBeUndefined();
    expect(headers['x-selection-size']).toBe(String(N));
    expect(count).toBe(N);
    expect(chunks).toBeGreaterThan(10);
    // Server and client share this process: the whole answer as strings would add ~90 MB.
    expect(growthMb).toBeLessThan(48);

    const expected = await selectItems(h.service.services.ctx, 'big', { order: 'hardest', fraction: 1 });
    expect(expected.externalIds).toHaveLength(N);
    expect(hash).toBe(expected.externalIds.reduce(chain, 0));
  }, 300_000);
  it('exports all 200k scores as streamed NDJSON and as Parquet row groups with a footer', async () => {
    for (const format of ['ndjson', 'parquet'] as const) {
      const { newlines, bytes, tail, chunks } = await new Promise<{ newlines: number; bytes: number; tail: string; chunks: number }>((resolve, reject) => {
        const req = http.get(
          `http://127.0.0.1:${h.service.httpPort}/v1/datasets/big/scores?format=${format}`,
          { headers: { authorization: bearer(h.keys.reader) } },
          (res) => {
            let newlines = 0;
            let bytes = 0;
            let chunks = 0;
            let last: Buffer = Buffer.alloc(0);
            res.on('data', (chunk: Buffer) => {
              chunks++;
              bytes += chunk.length;
              for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) newlines++;
              last = chunk;
            });
            res.on('end', () => resolve({ newlines, bytes, chunks, tail: last.subarray(last.length - 4).toString('latin1') }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
      });
      // Streamed: many chunks, not one body (NDJSON ~59 MB, Parquet ~4.5 MB in row groups of 50,000).
      expect(chunks).toBeGreaterThan(3);
      if (format === 'ndjson') expect(newlines).toBe(N);
      else {
        expect(tail).toBe('PAR1');
        expect(bytes).toBeGreaterThan(N);
      }
    }
  }, 300_000);
});
