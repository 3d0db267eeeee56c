import path from 'node:path';
import { Option, type Command } from 'commander';
import type { MetadataFilter, SelectionQuery } from '../../clients/typescript/src/index.js';
import { integer, json, number, positiveInteger, type Act } from './command.js';
import { EXIT } from './output.js';
import { coalesce, idLines, refuseParquetOnTerminal, writeOutput } from './write.js';

interface SelectOptions extends SelectionQuery {
  dataset: string;
  format?: 'lines' | 'ndjson' | 'csv';
  output?: string;
}

/** `protoprune select`: the ids a policy keeps, streamed in policy order. */
export function selectCommand(command: Command, datasetOption: Option, act: Act): void {
  command
    .description('the ids a pruning policy keeps, in policy order, streamed: one per line (default), NDJSON or CSV')
    .addOption(datasetOption)
    .option('--fraction <f>', 'keep this fraction, in (0, 1]', number)
    .option('--count <n>', 'keep this many (instead of --fraction)', integer)
    .option('--order <order>', 'auto (default), hardest, easiest, random, stratified, moderate or hierarchical')
    .addOption(new Option('--balance <balance>', 'cluster: every cluster keeps the same fraction').choices(['none', 'cluster']))
    .option('--seed <n>', 'seed of random choices', integer)
    .option('--outlier-fraction <f>', 'stratified: the hardest fraction set aside', number)
    .option('--bins <n>', 'stratified: score bins', positiveInteger)
    .option('--filter <json>', 'only items whose metadata matches, e.g. {"contains":{"split":"train"}}', json)
    .option('--dedup', 'drop SemDeDup near-duplicates first (needs a completed dedup run)')
    .option('--epsilon <e>', 'dedup: the run at this ε', number)
    .option('--dedup-job <id>', 'dedup: this run instead')
    .option('--dedup-keep <which>', 'dedup: the member of a group that stays: farthest (default), closest, random, highest, lowest')
    .option('--dedup-keep-field <field>', 'dedup: the numeric metadata field of highest/lowest')
    .addOption(new Option('--format <format>', 'lines: one id per line (default; ndjson with --json)').choices(['lines', 'ndjson', 'csv']))
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .action(
      act(async ({ client, out }, options: SelectOptions) => {
        const { dataset, format = out.json ? 'ndjson' : 'lines', output, ...query } = options;
        let info;
        if (format === 'lines') {
          const selection = await client.streamSelection(dataset, query);
          info = selection.info;
          await writeOutput(coalesce(idLines(selection)), output, out.io.stdout);
        } else {
          const download = await client.downloadSelection(dataset, query, format);
          info = download.info;
          await writeOutput(download.body, output, out.io.stdout);
        }
        const dropped = info.dedup ? `, ${info.dedup.dropped} near-duplicates dropped first` : '';
        out.note(`selected ${info.size} of ${info.matched} items (policy ${info.policy}, prototype version ${info.prototypeVersion}${dropped})${output ? ` into ${output}` : ''}`);
        if (output) out.jsonResult({ output, format, ...info });
        return EXIT.ok;
      }),
    );
}

interface ExportOptions {
  dataset: string;
  format?: 'ndjson' | 'csv' | 'parquet';
  output?: string;
  filter?: MetadataFilter;
  epsilon?: number;
  job?: string;
}

const FORMAT_OF_EXTENSION: Record<string, 'ndjson' | 'csv' | 'parquet'> = { '.csv': 'csv', '.parquet': 'parquet', '.pq': 'parquet', '.ndjson': 'ndjson', '.jsonl': 'ndjson' };

/** The format an output file's extension names (.csv, .parquet/.pq, .ndjson/.jsonl), if any. */
export function formatOfOutput(file: string | undefined): 'ndjson' | 'csv' | 'parquet' | undefined {
  return file === undefined ? undefined : FORMAT_OF_EXTENSION[path.extname(file).toLowerCase()];
}

/** `protoprune export`: every item's score, streamed from the server to a file or stdout. */
export function exportCommand(command: Command, datasetOption: Option, act: Act): void {
  command
    .description('every item’s score, cluster, percentile, duplicate group and metadata, easiest first, streamed')
    .addOption(datasetOption)
    .addOption(new Option('--format <format>', 'default: from the --output extension, else ndjson').choices(['ndjson', 'csv', 'parquet']))
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .option('--filter <json>', 'only items whose metadata matches', json)
    .option('--epsilon <e>', 'the dedup run at this ε fills the duplicate columns', number)
    .option('--job <id>', 'this dedup job’s run fills the duplicate columns')
    .action(
      act(async ({ client, out }, options: ExportOptions) => {
        const { dataset, output, filter, epsilon, job } = options;
        const format = options.format ?? formatOfOutput(output) ?? 'ndjson';
        refuseParquetOnTerminal(format, output, out.io.stdout);
        const download = await client.downloadScores(dataset, { filter, epsilon, job }, format);
        await writeOutput(download.body, output, out.io.stdout);
        const { info } = download;
        out.note(`exported ${info.matched} of ${info.total} items (prototype version ${info.prototypeVersion}, ${format})${output ? ` to ${output}` : ''}`);
        if (output) out.jsonResult({ output, format, ...info });
        return EXIT.ok;
      }),
    );
}
