import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { refusedItems, type ProtopruneClient, type ScoreRequest, type ScoreResult } from '../../clients/typescript/src/index.js';
import { json, number, integer, positiveInteger, type Act } from './command.js';
import { openEmbeddings, type EmbeddingFormat } from './embedding-files.js';
import { Failures, type Failure } from './ingest-common.js';
import { CliError, EXIT, plural, type Output } from './output.js';

type ScoreItem = ScoreRequest['items'][number];
type Policy = NonNullable<ScoreRequest['policy']>;

interface ScoreOptions extends Omit<Policy, 'order'> {
  dataset: string;
  order?: Policy['order'];
  embeddings?: string;
  format?: EmbeddingFormat;
  idColumn: string;
  vectorColumn: string;
  idPrefix?: string;
  batch: number;
}

/** Request batches of image files; a file that cannot be read is a failure of its own. */
async function* imageBatches(files: readonly string[], batchSize: number, failures: Failures): AsyncGenerator<ScoreItem[]> {
  for (let at = 0; at < files.length; at += batchSize) {
    const items: ScoreItem[] = [];
    for (const file of files.slice(at, at + batchSize)) {
      try {
        items.push({ externalId: file, image: (await readFile(file)).toString('base64') });
      } catch (error) {
        failures.add({ externalId: file, code: 'READ_FAILED', message: (error as Error).message });
      }
    }
    if (items.length > 0) yield items;
  }
}

/** Request batches of an embeddings file's rows, each vector as base64 of its float32 bytes. */
async function* embeddingBatches(file: string, options: ScoreOptions, failures: Failures): AsyncGenerator<ScoreItem[]> {
  const { source } = await openEmbeddings(file, options.format, { ...options, metadataField: 'metadata' });
  const width = source.dimension * 4;
  for await (const chunk of source.chunks(options.batch)) {
    failures.addAll(chunk.failures);
    const bytes = Buffer.from(chunk.vectors.buffer, chunk.vectors.byteOffset, chunk.vectors.byteLength);
    const items = chunk.externalIds.map((externalId, i) => ({ externalId, embedding: bytes.subarray(i * width, (i + 1) * width).toString('base64') }));
    if (items.length > 0) yield items;
  }
}

/** A batch none of whose items could be scored is refused as a whole; here it is each item failing. */
async function scoreBatch(client: ProtopruneClient, dataset: string, request: ScoreRequest): Promise<ScoreResult | Failure[]> {
  try {
    return await client.score(dataset, request);
  } catch (error) {
    const refused = refusedItems(error);
    if (refused) return refused;
    throw error;
  }
}

type Scored = Extract<ScoreResult['items'][number], { status: 'scored' }>;

function scoredLine(item: Scored): string {
  const near = item.duplicate && item.nearest ? ` of ${item.nearest.externalId} (similarity ${item.nearest.similarity.toFixed(4)})` : '';
  return `${item.externalId}  ${item.decision}  score ${item.score.toFixed(4)}  percentile ${item.percentile.toFixed(1)}  cluster ${item.cluster}  ${item.reason}${near}`;
}

/**
 * Scores the items batch by batch and writes each decision as it arrives (memory holds one batch,
 * not the run; a slow reader of stdout holds the next batch back): lines of text, or with --json
 * one document `{"items": [...], …}` written in pieces — closed with an `"error"` member if the
 * run stops midway, so it stays one JSON document.
 */
async function score(client: ProtopruneClient, images: string[], options: ScoreOptions, out: Output): Promise<number> {
  if ((images.length > 0) === (options.embeddings !== undefined)) throw new CliError('give image files, or --embeddings <file> (not both)', EXIT.usage);
  const { dataset, order, fraction, balance, seed, epsilon, filter } = options;
  const policy: Policy = { order, fraction, balance, seed, epsilon, filter };
  const failures = new Failures();
  const batches = options.embeddings === undefined ? imageBatches(images, options.batch, failures) : embeddingBatches(options.embeddings, options, failures);
  const write = async (text: string) => {
    if (!out.io.stdout.write(text)) await once(out.io.stdout, 'drain');
  };
  let first: ScoreResult | undefined;
  let scored = 0;
  let keep = 0;
  try {
    for await (const items of batches) {
      const result = await scoreBatch(client, dataset, { items, policy });
      if (Array.isArray(result)) {
        failures.addAll(result);
        continue;
      }
      first ??= result;
      for (const item of result.items) {
        if (item.status !== 'scored') {
          failures.add(item);
          continue;
        }
        await write(out.json ? `${scored === 0 ? '{"items":[' : ','}${JSON.stringify(item)}` : `${scoredLine(item)}\n`);
        scored++;
        if (item.decision === 'keep') keep++;
      }
    }
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const stopped = { code: typeof code === 'string' ? code : 'INTERNAL', message: error instanceof Error ? error.message : String(error) };
    if (out.json && scored > 0) await write(`],"scored":${scored},"error":${JSON.stringify(stopped)}}\n`);
    throw error;
  }
  const ran = first?.policy;
  if (out.json) {
    const rest = { prototypeVersion: first?.prototypeVersion ?? null, policy: ran ?? null, matched: first?.matched ?? null, scored, keep, ...failures.summary() };
    await write(`${scored === 0 ? '{"items":[' : ''}],${JSON.stringify(rest).slice(1)}\n`);
  } else {
    const policyText = ran ? `${ran.order}${ran.balance === 'cluster' ? '+cluster' : ''} keeping ${ran.fraction}${ran.auto ? ', chosen by auto' : ''}` : 'none ran';
    const summary = `${plural(keep, 'item')} to keep, ${scored - keep} to skip, ${failures.count} failed (policy ${policyText}, prototype version ${first?.prototypeVersion ?? '-'})`;
    await write(`${[summary, ...failures.lines('item')].join('\n')}\n`);
  }
  return failures.count > 0 ? EXIT.failed : EXIT.ok;
}

/** `protoprune score`: keep/skip decisions for new images or embeddings, without storing them. */
export function scoreCommand(command: Command, datasetOption: Option, act: Act): void {
  command
    .description('score new images or embeddings without storing them: keep or skip each (should we annotate it?)')
    .argument('[images...]', 'image files; their paths are their ids')
    .addOption(datasetOption)
    .option('--embeddings <file>', 'score the rows of an embeddings file (.npy, .parquet, .ndjson) instead')
    .addOption(new Option('--format <format>', '--embeddings file format (default: from the extension)').choices(['npy', 'parquet', 'ndjson']))
    .option('--id-column <name>', '--embeddings: parquet column / ndjson field of the id', 'id')
    .option('--vector-column <name>', '--embeddings: parquet column / ndjson field of the vector', 'embedding')
    .option('--id-prefix <prefix>', '--embeddings: ids are prefix + row index')
    .option('--order <order>', 'policy: auto (default), hardest, easiest, random, stratified, moderate or hierarchical')
    .option('--fraction <f>', 'policy: the fraction a selection keeps (default 0.3)', number)
    .addOption(new Option('--balance <balance>', 'policy: cluster balance').choices(['none', 'cluster']))
    .option('--seed <n>', 'policy: seed', integer)
    .option('--epsilon <e>', 'near-duplicate threshold (default: the dataset’s)', number)
    .option('--filter <json>', 'policy: decide against the stored items whose metadata matches', json)
    .option('--batch <n>', 'items per request', positiveInteger, 64)
    .action(act(async ({ client, out }, images: string[], options: ScoreOptions) => score(client, images, options, out)));
}
