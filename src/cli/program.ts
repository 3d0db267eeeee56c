import { Command, CommanderError, Option } from 'commander';
import { createClient, ProtopruneError, type Dataset, type MetadataFilter } from '../../clients/typescript/src/index.js';
import { commaList, followJob, jobExit, jobLine, json, number, positiveInteger, type Act, type CommandContext } from './command.js';
import { ingestEmbeddingFile, type IngestEmbeddingsOptions } from './ingest-embeddings.js';
import { ingestFolder, type IngestFolderOptions } from './ingest-images.js';
import { manifestsCommand } from './manifests.js';
import { CliError, EXIT, Output, plural, type CliIo } from './output.js';
import { scoreCommand } from './score.js';
import { exportCommand, selectCommand } from './streams.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

interface GlobalOptions {
  url?: string;
  apiKey?: string;
  json?: boolean;
}

function datasetLine(d: Dataset): string {
  const kind = d.model ? `images (${d.model.name})` : 'embeddings';
  return `${d.name}  ${d.dimension}-d ${kind}  prototype version ${d.activeVersion ?? 'none'}  k ${d.k ?? 'auto'}`;
}

/** The server's URL: http(s) only, else a usage error (not a failure deep inside a request). */
function serverUrl(value: string, source: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`${source} ${JSON.stringify(value)} is not a URL (e.g. ${DEFAULT_URL})`, EXIT.usage);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`${source} ${JSON.stringify(value)} is not an http(s) URL`, EXIT.usage);
  return value;
}

/**
 * The whole command line. `report` receives each command's exit status. With `asJson`, the usage
 * errors commander reports are one JSON line too, as every other error.
 */
function buildProgram(io: CliIo, report: (code: number) => void, asJson: boolean): Command {
  const program = new Command('protoprune');
  program
    .description('Label-free data pruning: push images or embeddings to a protoprune server, refit prototypes, select, score and export.')
    .option('--url <url>', `the server (default: $PROTOPRUNE_URL, else ${DEFAULT_URL})`)
    .option('--api-key <key>', 'API key (default: $PROTOPRUNE_API_KEY)')
    .option('--json', 'machine-readable output only on stdout; no progress')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
      outputError: (text, write) => write(asJson ? `${JSON.stringify({ error: { code: 'USAGE', message: text.replace(/^error: /, '').trim(), status: null } })}\n` : text),
    });

  const context = (command: Command): CommandContext => {
    const { url, apiKey, json: asJson } = command.optsWithGlobals<GlobalOptions>();
    return {
      client: createClient({
        baseUrl: url !== undefined ? serverUrl(url, '--url') : io.env.PROTOPRUNE_URL ? serverUrl(io.env.PROTOPRUNE_URL, 'PROTOPRUNE_URL') : DEFAULT_URL,
        apiKey: apiKey ?? io.env.PROTOPRUNE_API_KEY,
      }),
      out: new Output(io, Boolean(asJson)),
    };
  };
  const act: Act =
    <Args extends unknown[]>(run: (ctx: CommandContext, ...args: Args) => Promise<number>) =>
    async (...args: unknown[]) => {
      // commander passes the arguments, the options, then the command itself.
      const command = args[args.length - 1] as Command;
      report(await run(context(command), ...(args.slice(0, -1) as Args)));
    };
  const datasetOption = () => new Option('-d, --dataset <name>', 'dataset name').makeOptionMandatory();

  program
    .command('ingest')
    .description('upload every image under a folder (recognised by magic bytes); ids are relative paths; re-runs skip stored ids')
    .argument('<folder>')
    .addOption(datasetOption())
    .option('--concurrency <n>', 'requests in flight', positiveInteger, 4)
    .option('--batch <n>', 'images per request', positiveInteger, 16)
    .option('--no-create', 'fail when the dataset does not exist (default: create an image dataset)')
    .option('--k <k>', 'prototypes of a dataset this creates (default: chosen per fit)', positiveInteger)
    .action(act(async ({ client, out }, folder: string, options: IngestFolderOptions) => ingestFolder(client, folder, options, out)));

  program
    .command('ingest-embeddings')
    .description('upload precomputed float32 vectors from .npy (2-D, C order), .parquet (id + list column) or .ndjson ({"id", "embedding"} per line)')
    .argument('<file>')
    .addOption(datasetOption())
    .addOption(new Option('--format <format>', 'file format (default: from the extension)').choices(['npy', 'parquet', 'ndjson']))
    .option('--id-column <name>', 'parquet column / ndjson field of the external id', 'id')
    .option('--vector-column <name>', 'parquet column / ndjson field of the vector', 'embedding')
    .option('--metadata-field <name>', 'ndjson field of an item’s metadata object', 'metadata')
    .option('--id-prefix <prefix>', 'ids are prefix + row index (from 0) instead of a column; the only ids of .npy (default there: the file name without extension and "/", e.g. part-1/0)')
    .option('--batch <n>', 'rows per request', positiveInteger, 1000)
    .option('--concurrency <n>', 'requests in flight', positiveInteger, 2)
    .option('--no-create', 'fail when the dataset does not exist (default: create it with the file’s dimension)')
    .option('--k <k>', 'prototypes of a dataset this creates', positiveInteger)
    .action(act(async ({ client, out }, file: string, options: IngestEmbeddingsOptions) => ingestEmbeddingFile(client, file, options, out)));

  program
    .command('refit')
    .description('request a full refit of the prototypes (rescores every item)')
    .addOption(datasetOption())
    .option('--wait', 'follow the job to its end with a progress bar')
    .action(
      act(async ({ client, out }, options: { dataset: string; wait?: boolean }) => {
        const job = await client.requestRefit(options.dataset);
        if (!options.wait) {
          out.result(jobLine(job), job);
          return EXIT.ok;
        }
        const finished = await followJob(client, job, out);
        const prototypes = finished.state === 'succeeded' ? await client.prototypes(options.dataset) : null;
        const fitted = prototypes ? `: prototype version ${prototypes.version}, k ${prototypes.k}, objective ${prototypes.objective?.toFixed(4) ?? '-'}` : '';
        out.result(`${jobLine(finished)}${fitted}`, { job: finished, prototypes });
        return jobExit(finished);
      }),
    );

  program
    .command('dedup')
    .description('run SemDeDup near-duplicate detection on the active prototypes')
    .addOption(datasetOption())
    .option('--epsilon <e>', 'similarity ≥ 1 − ε is a duplicate (default: the dataset’s)', number)
    .option('--wait', 'follow the job to its end with a progress bar')
    .action(
      act(async ({ client, out }, options: { dataset: string; epsilon?: number; wait?: boolean }) => {
        const job = await client.requestDedup(options.dataset, { epsilon: options.epsilon });
        if (!options.wait) {
          out.result(jobLine(job), job);
          return EXIT.ok;
        }
        const finished = await followJob(client, job, out);
        if (finished.state !== 'succeeded') {
          out.result(jobLine(finished), { job: finished, duplicates: null });
          return EXIT.failed;
        }
        const page = await client.duplicates(options.dataset, { job: finished.id, limit: 1 });
        const run = { jobId: page.jobId, prototypeVersion: page.prototypeVersion, epsilon: page.epsilon, groupCount: page.groupCount, duplicateCount: page.duplicateCount };
        out.result(`${jobLine(finished)}: ${plural(run.groupCount, 'group')}, ${plural(run.duplicateCount, 'duplicate')} at ε ${run.epsilon}`, { job: finished, duplicates: run });
        return EXIT.ok;
      }),
    );

  selectCommand(program.command('select'), datasetOption(), act);
  exportCommand(program.command('export'), datasetOption(), act);
  scoreCommand(program.command('score'), datasetOption(), act);
  manifestsCommand(program.command('manifests'), datasetOption, act);

  program
    .command('stats')
    .description('item counts, score histogram, cluster sizes, drift and ingest activity')
    .addOption(datasetOption())
    .option('--filter <json>', 'only items whose metadata matches (README: metadata filters)', json)
    .action(
      act(async ({ client, out }, options: { dataset: string; filter?: MetadataFilter }) => {
        const stats = await client.stats(options.dataset, { filter: options.filter });
        const lines = [
          `${stats.dataset}: ${stats.itemCount} items${options.filter ? ' matching' : ''}, ${stats.scoredCount} scored`,
          `prototypes: version ${stats.prototypeVersion ?? 'none'}, k ${stats.k ?? '-'}, last refit ${stats.lastRefit?.fittedAt ?? 'never'}`,
          `drift since the last full fit: mean ${stats.drift.mean.toFixed(4)}, max ${stats.drift.max.toFixed(4)}; ${(100 * stats.arrivedFraction).toFixed(1)}% of items arrived since`,
          `cluster sizes: ${stats.clusterSizes.join(' ') || '-'}`,
          `score histogram (bin width ${stats.histogram.binWidth}): ${stats.histogram.counts.join(' ') || '-'}`,
          `ingested: ${stats.ingest.lastHour} in the last hour, ${stats.ingest.last24Hours} in the last 24 hours`,
        ];
        if (stats.refitJob) lines.push(`refit: ${jobLine(stats.refitJob)}`);
        out.result(lines, stats);
        return EXIT.ok;
      }),
    );

  const datasets = program.command('datasets').description('list, show, create and delete datasets');
  datasets
    .command('list')
    .description('the datasets this key may read')
    .action(
      act(async ({ client, out }) => {
        const all = await client.listDatasets();
        out.result(all.length > 0 ? all.map(datasetLine) : 'no datasets', all);
        return EXIT.ok;
      }),
    );
  datasets
    .command('get')
    .argument('<name>')
    .action(
      act(async ({ client, out }, name: string) => {
        const dataset = await client.getDataset(name);
        out.result([datasetLine(dataset), `settings: ${JSON.stringify(dataset.settings)}`], dataset);
        return EXIT.ok;
      }),
    );
  datasets
    .command('create')
    .description('an image dataset, or with --dimension one of precomputed embeddings')
    .argument('<name>')
    .option('--dimension <n>', 'embedding-only dataset of this dimension', positiveInteger)
    .option('--k <k>', 'prototypes (default: chosen per fit)', positiveInteger)
    .option('--settings <json>', 'dataset settings, e.g. {"minItemsForFit": 100} (README: per-dataset settings)', json)
    .action(
      act(async ({ client, out }, name: string, options: { dimension?: number; k?: number; settings?: Record<string, unknown> }) => {
        const dataset = await client.createDataset({ name, ...options });
        out.result(`created ${datasetLine(dataset)}`, dataset);
        return EXIT.ok;
      }),
    );
  datasets
    .command('delete')
    .description('delete a dataset with all its items, scores, prototypes and jobs')
    .argument('<name>')
    .action(
      act(async ({ client, out }, name: string) => {
        await client.deleteDataset(name);
        out.result(`deleted ${name}`, { deleted: name });
        return EXIT.ok;
      }),
    );

  const jobs = program.command('jobs').description('background jobs (refits, dedup runs, ingests)');
  jobs
    .command('get')
    .argument('<id>')
    .action(
      act(async ({ client, out }, id: string) => {
        const job = await client.getJob(id);
        out.result(jobLine(job), job);
        return EXIT.ok;
      }),
    );
  jobs
    .command('wait')
    .description('follow a job to its end; exits non-zero unless it succeeded')
    .argument('<id>')
    .action(
      act(async ({ client, out }, id: string) => {
        const finished = await followJob(client, await client.getJob(id), out);
        out.result(jobLine(finished), finished);
        return jobExit(finished);
      }),
    );

  const keys = program.command('keys').description('API keys (needs an admin key)');
  keys
    .command('create')
    .requiredOption('--name <name>', 'what the key is for')
    .requiredOption('--scopes <scopes>', 'read, write and/or admin, comma-separated', commaList)
    .option('--datasets <names>', 'limit the key to these datasets, comma-separated', commaList)
    .action(
      act(async ({ client, out }, options: { name: string; scopes: ('read' | 'write' | 'admin')[]; datasets?: string[] }) => {
        const key = await client.createApiKey(options);
        out.result([`created key ${key.id} (${key.name}; ${key.scopes.join(', ')})`, `secret (shown once; send as "Authorization: Bearer <secret>"):`, key.secret], key);
        return EXIT.ok;
      }),
    );
  keys
    .command('list')
    .action(
      act(async ({ client, out }) => {
        const all = await client.listApiKeys();
        const line = (k: (typeof all)[number]) =>
          `${k.id}  ${k.name}  ${k.scopes.join(',')}  ${k.datasets.length > 0 ? k.datasets.join(',') : 'all datasets'}  ${k.revokedAt ? `revoked ${k.revokedAt}` : `last used ${k.lastUsedAt ?? 'never'}`}`;
        out.result(all.length > 0 ? all.map(line) : 'no keys', all);
        return EXIT.ok;
      }),
    );
  keys
    .command('revoke')
    .argument('<id>')
    .action(
      act(async ({ client, out }, id: string) => {
        const key = await client.revokeApiKey(id);
        out.result(`revoked ${key.id} (${key.name})`, key);
        return EXIT.ok;
      }),
    );

  return program;
}

/** One line on stderr for a failed command (JSON with --json), and its exit status. */
function reportError(error: unknown, io: CliIo, asJson: boolean): number {
  // commander has already printed its own message (or the help it was asked for).
  if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
  let status: number | null = null;
  let code: string;
  let message: string;
  let exitCode: number = EXIT.failed;
  if (error instanceof ProtopruneError) {
    ({ status, code, message } = error);
  } else if (error instanceof CliError) {
    code = exitCodeName(error.exitCode);
    message = error.message;
    exitCode = error.exitCode;
  } else {
    code = 'INTERNAL';
    message = error instanceof Error ? error.message : String(error);
  }
  if (asJson) io.stderr.write(`${JSON.stringify({ error: { code, message, status } })}\n`);
  else io.stderr.write(`protoprune: ${error instanceof CliError ? message : `${code}: ${message}${status ? ` (HTTP ${status})` : ''}`}\n`);
  return exitCode;
}

const exitCodeName = (exitCode: number) => (exitCode === EXIT.usage ? 'USAGE' : 'LOCAL_ERROR');

/** Runs the CLI on `argv` (without node and the script) and returns its exit status. */
export async function run(argv: string[], io: CliIo): Promise<number> {
  let exitCode: number = EXIT.ok;
  const asJson = argv.includes('--json');
  const program = buildProgram(io, (code) => (exitCode = code), asJson);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    return reportError(error, io, asJson);
  }
}
