import { Option, type Command } from 'commander';
import type { CreateManifestRequest, Manifest } from '../../clients/typescript/src/index.js';
import { json, positiveInteger, type Act } from './command.js';
import { CliError, EXIT } from './output.js';
import { formatOfOutput } from './streams.js';
import { coalesce, idLines, refuseParquetOnTerminal, writeOutput } from './write.js';

type Selection = NonNullable<CreateManifestRequest['selection']>;
type Export = NonNullable<CreateManifestRequest['export']>;

function manifestLine(m: Manifest): string {
  const named = m.name ? ` ${JSON.stringify(m.name)}` : '';
  return `${m.id}${named}  ${m.kind} of ${m.dataset}  ${m.count} ids  prototype version ${m.prototypeVersion}  sha256 ${m.sha256}  ${m.createdAt}`;
}

/** `protoprune manifests …`: saved subsets, fetched unchanged later (create, list, get, ids, delete). */
export function manifestsCommand(manifests: Command, datasetOption: () => Option, act: Act): void {
  manifests.description('saved subsets: a selection’s (or export’s) ordered ids, fetched unchanged after refits and ingests');

  manifests
    .command('create')
    .description('save a selection (default: the auto policy’s 30%) or a score export as a manifest')
    .addOption(datasetOption())
    .option('--selection <json>', 'the selection, as GET …/selection’s parameters in JSON, e.g. {"order":"hardest","fraction":0.3}', json)
    .option('--export <json>', 'a score export instead, e.g. {} or {"filter":{"contains":{"split":"train"}}}', json)
    .option('--name <name>', 'a name to find it by')
    .option('--description <text>', 'what it is for')
    .action(
      act(async ({ client, out }, options: { dataset: string; selection?: Selection; export?: Export; name?: string; description?: string }) => {
        if (options.selection !== undefined && options.export !== undefined) throw new CliError('give --selection or --export, not both', EXIT.usage);
        const source = options.export !== undefined ? { export: options.export } : { selection: options.selection ?? {} };
        const manifest = await client.createManifest(options.dataset, { ...source, name: options.name, description: options.description });
        out.result(`created manifest ${manifestLine(manifest)}`, manifest);
        return EXIT.ok;
      }),
    );

  manifests
    .command('list')
    .description('the dataset’s manifests, newest first')
    .addOption(datasetOption())
    .option('--limit <n>', 'at most this many', positiveInteger)
    .action(
      act(async ({ client, out }, options: { dataset: string; limit?: number }) => {
        const all: Manifest[] = [];
        let cursor: string | undefined;
        do {
          const page = await client.listManifests(options.dataset, { cursor, limit: options.limit === undefined ? undefined : Math.min(100, options.limit - all.length) });
          all.push(...page.manifests);
          cursor = page.nextCursor ?? undefined;
        } while (cursor !== undefined && (options.limit === undefined || all.length < options.limit));
        out.result(all.length > 0 ? all.map(manifestLine) : 'no manifests', all);
        return EXIT.ok;
      }),
    );

  manifests
    .command('get')
    .argument('<id>')
    .action(
      act(async ({ client, out }, id: string) => {
        const manifest = await client.getManifest(id);
        out.result([manifestLine(manifest), `parameters: ${JSON.stringify(manifest.parameters)}`], manifest);
        return EXIT.ok;
      }),
    );

  manifests
    .command('ids')
    .description('the manifest’s ids in their stored order: one per line (default), NDJSON, CSV or Parquet')
    .argument('<id>')
    .addOption(new Option('--format <format>', 'default: from the --output extension (.csv, .parquet, .ndjson), else lines: one id per line (ndjson with --json)').choices(['lines', 'ndjson', 'csv', 'parquet']))
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .action(
      act(async ({ client, out }, id: string, options: { format?: 'lines' | 'ndjson' | 'csv' | 'parquet'; output?: string }) => {
        const { output } = options;
        const format = options.format ?? formatOfOutput(output) ?? (out.json ? 'ndjson' : 'lines');
        refuseParquetOnTerminal(format, output, out.io.stdout);
        let info;
        if (format === 'lines') {
          const ids = await client.streamManifestIds(id);
          info = ids.info;
          await writeOutput(coalesce(idLines(ids)), output, out.io.stdout);
        } else {
          const download = await client.downloadManifestIds(id, format);
          info = download.info;
          await writeOutput(download.body, output, out.io.stdout);
        }
        out.note(`${info.count} ids of manifest ${id} (prototype version ${info.prototypeVersion}, sha256 ${info.sha256})${output ? ` into ${output}` : ''}`);
        if (output) out.jsonResult({ output, format, ...info });
        return EXIT.ok;
      }),
    );

  manifests
    .command('delete')
    .argument('<id>')
    .action(
      act(async ({ client, out }, id: string) => {
        await client.deleteManifest(id);
        out.result(`deleted manifest ${id}`, { deleted: id });
        return EXIT.ok;
      }),
    );
}
