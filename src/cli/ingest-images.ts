import { readFile } from 'node:fs/promises';
import { ProtopruneError, type ImageItem, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { forEachConcurrently } from './concurrency.js';
import { scanFolder, type ImageFile } from './image-files.js';
import { ensureDataset, Failures, type Failure } from './ingest-common.js';
import { CliError, EXIT, plural, seconds, type Output } from './output.js';
import { createProgress } from './progress.js';

export interface IngestFolderOptions {
  dataset: string;
  /** Requests in flight at once. */
  concurrency: number;
  /** Images per request at most. */
  batch: number;
  create: boolean;
  k?: number;
}

/** Raw image bytes per request at most: as base64 JSON that is ~22 MiB, well within the default 64 MiB body limit. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;

/** Consecutive files, at most `maxCount` and MAX_BATCH_BYTES (a larger file goes alone). */
function* batches(files: readonly ImageFile[], maxCount: number): Generator<ImageFile[]> {
  let batch: ImageFile[] = [];
  let bytes = 0;
  for (const file of files) {
    if (batch.length > 0 && (batch.length >= maxCount || bytes + file.bytes > MAX_BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(file);
    bytes += file.bytes;
  }
  if (batch.length > 0) yield batch;
}

interface BatchOutcome {
  stored: number;
  updated: number;
  failures: Failure[];
}

/**
 * Uploads one batch. What fails an item alone (unreadable file, an image the server cannot decode,
 * a batch too large for the server) is a failure of those files; anything else (the dataset is
 * gone, the key may not write, …) would fail every batch and is thrown.
 */
async function uploadBatch(client: ProtopruneClient, dataset: string, batch: readonly ImageFile[]): Promise<BatchOutcome> {
  const failures: Failure[] = [];
  const items: ImageItem[] = [];
  for (const file of batch) {
    try {
      items.push({ externalId: file.externalId, image: await readFile(file.absolutePath) });
    } catch (error) {
      failures.push({ externalId: file.externalId, code: 'READ_FAILED', message: (error as Error).message });
    }
  }
  if (items.length === 0) return { stored: 0, updated: 0, failures };
  try {
    const result = await client.ingestImages(dataset, items);
    for (const outcome of result.items) {
      if (outcome.status === 'error') failures.push({ externalId: outcome.externalId, code: outcome.code, message: outcome.message });
    }
    return { stored: result.counts.stored, updated: result.counts.updated, failures };
  } catch (error) {
    if (!(error instanceof ProtopruneError) || error.status !== 413) throw error;
    const message = `${error.message} (try a smaller --batch)`;
    return { stored: 0, updated: 0, failures: [...failures, ...items.map(({ externalId }) => ({ externalId, code: error.code, message }))] };
  }
}

/**
 * `protoprune ingest <folder>`: every image under the folder (by magic bytes), its relative path
 * as external id; ids the dataset already holds are skipped, so a re-run resumes.
 */
export async function ingestFolder(client: ProtopruneClient, root: string, options: IngestFolderOptions, out: Output): Promise<number> {
  const startedAt = Date.now();
  const scan = await scanFolder(root).catch((error: Error) => {
    throw new CliError(`cannot read folder ${root}: ${error.message}`);
  });
  const { dataset, created } = await ensureDataset(client, { name: options.dataset, create: options.create, k: options.k }, out);
  const ids = scan.images.map((image) => image.externalId);
  const alreadyStored = new Set(ids.length > 0 ? await client.findExistingItems(dataset.name, ids) : []);
  const toUpload = scan.images.filter((image) => !alreadyStored.has(image.externalId));
  const skipped = [alreadyStored.size > 0 && `${alreadyStored.size} already stored`, scan.notImages.length > 0 && `${plural(scan.notImages.length, 'file')} not an image`].filter(Boolean);
  out.note(`${plural(scan.images.length, 'image')} under ${root}${skipped.length > 0 ? ` (skipping ${skipped.join(', ')})` : ''}; uploading ${toUpload.length}`);

  const failures = new Failures();
  failures.addAll(scan.refused);
  const counts = { stored: 0, updated: 0 };
  if (toUpload.length > 0) {
    const progress = createProgress(out.io, { json: out.json, label: 'ingest', unit: 'images' });
    progress.start(toUpload.length);
    let done = 0;
    try {
      await forEachConcurrently(batches(toUpload, options.batch), options.concurrency, async (batch) => {
        const outcome = await uploadBatch(client, dataset.name, batch);
        counts.stored += outcome.stored;
        counts.updated += outcome.updated;
        failures.addAll(outcome.failures);
        done += batch.length;
        progress.update(done, { note: failures.note() });
      });
    } finally {
      progress.stop();
    }
  }
  const elapsed = Date.now() - startedAt;
  out.result(
    [
      `ingested into ${dataset.name} in ${seconds(elapsed)}: ${counts.stored} stored, ${counts.updated} updated, ${failures.count} failed` +
        (skipped.length > 0 ? `; skipped ${skipped.join(', ')}` : ''),
      ...failures.lines('file'),
    ],
    {
      dataset: dataset.name,
      created,
      images: scan.images.length,
      alreadyStored: alreadyStored.size,
      notImages: scan.notImages.slice(0, Failures.KEPT),
      notImagesOmitted: Math.max(0, scan.notImages.length - Failures.KEPT),
      uploaded: toUpload.length,
      stored: counts.stored,
      updated: counts.updated,
      ...failures.summary(),
      seconds: elapsed / 1000,
    },
  );
  return failures.count > 0 ? EXIT.failed : EXIT.ok;
}
