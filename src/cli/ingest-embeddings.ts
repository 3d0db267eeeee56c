import type { ProtopruneClient } from '../../clients/typescript/src/index.js';
import { forEachConcurrently } from './concurrency.js';
import { openEmbeddings, type EmbeddingFormat, type RowIdentity } from './embedding-files.js';
import { ensureDataset, Failures } from './ingest-common.js';
import { CliError, EXIT, seconds, type Output } from './output.js';
import { createProgress } from './progress.js';

export interface IngestEmbeddingsOptions extends RowIdentity {
  dataset: string;
  format?: EmbeddingFormat;
  /** Rows per request. */
  batch: number;
  concurrency: number;
  create: boolean;
  k?: number;
}

/**
 * `protoprune ingest-embeddings <file>`: precomputed float32 vectors from .npy, .parquet or
 * .ndjson, read in batches and sent as binary frames, at most `concurrency` batches in flight (so
 * memory is bounded by the batches, not the file).
 */
export async function ingestEmbeddingFile(client: ProtopruneClient, file: string, options: IngestEmbeddingsOptions, out: Output): Promise<number> {
  const startedAt = Date.now();
  const { format, source } = await openEmbeddings(file, options.format, options);
  const { dataset, created } = await ensureDataset(client, { name: options.dataset, create: options.create, dimension: source.dimension, k: options.k }, out);
  if (dataset.dimension !== source.dimension) {
    throw new CliError(`dataset ${dataset.name} holds ${dataset.dimension}-d vectors; the file's are ${source.dimension}-d`);
  }

  const failures = new Failures();
  const counts = { rows: 0, stored: 0, updated: 0 };
  const progress = createProgress(out.io, { json: out.json, label: 'ingest-embeddings', unit: source.progressUnit });
  progress.start(source.progressTotal);
  // Batches finish out of order: progress shows the furthest one.
  let reached = 0;
  try {
    await forEachConcurrently(source.chunks(options.batch), options.concurrency, async (chunk) => {
      failures.addAll(chunk.failures);
      counts.rows += chunk.externalIds.length + chunk.failures.length;
      if (chunk.externalIds.length > 0) {
        const result = await client.ingestEmbeddings(dataset.name, { ...chunk, dimension: source.dimension }, { results: 'errors' });
        counts.stored += result.counts.stored;
        counts.updated += result.counts.updated;
        for (const outcome of result.items) {
          if (outcome.status === 'error') failures.add(outcome);
        }
      }
      reached = Math.max(reached, chunk.progress);
      progress.update(reached, { note: failures.note() });
    });
  } finally {
    progress.stop();
  }

  const elapsed = Date.now() - startedAt;
  out.result(
    [
      `ingested ${counts.rows} ${source.dimension}-d rows of ${file} into ${dataset.name} in ${seconds(elapsed)}: ${counts.stored} stored, ${counts.updated} updated, ${failures.count} failed`,
      ...failures.lines('row'),
    ],
    { dataset: dataset.name, created, format, dimension: source.dimension, rows: counts.rows, stored: counts.stored, updated: counts.updated, ...failures.summary(), seconds: elapsed / 1000 },
  );
  return failures.count > 0 ? EXIT.failed : EXIT.ok;
}
