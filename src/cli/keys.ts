/**
 * API key administration against the configured database (DATABASE_URL, or the embedded one under
 * DATA_DIR — stop the server first: the embedded database belongs to one process at a time).
 *
 *   npm run keys -- create --name ci-trainer --scopes read[,write,admin] [--datasets a,b]
 *   npm run keys -- list
 *   npm run keys -- revoke <key id>
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { listApiKeys, mintApiKey, OPERATOR, revokeApiKey } from '../service/auth.js';
import { ServiceError } from '../service/errors.js';
import { openDatabase } from '../store/open.js';

const USAGE = `usage:
  keys create --name <name> --scopes <read,write,admin> [--datasets <a,b>]
  keys list
  keys revoke <key id>`;

function list(value: string | undefined): string[] {
  return (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { name: { type: 'string' }, scopes: { type: 'string' }, datasets: { type: 'string' } },
  });
  const [command, ...rest] = positionals;
  if (!['create', 'list', 'revoke'].includes(command ?? '') || (command === 'revoke' && rest.length !== 1)) {
    process.stderr.write(`${USAGE}\n`);
    return 64;
  }
  const config = loadConfig();
  const { db } = await openDatabase(config.database);
  try {
    if (command === 'create') {
      const key = await mintApiKey(db, { name: values.name ?? '', scopes: list(values.scopes), datasets: list(values.datasets) }, OPERATOR);
      process.stdout.write(`${JSON.stringify({ id: key.id, name: key.name, scopes: key.scopes, datasets: key.datasets })}\n`);
      process.stdout.write(`secret (shown once; send as "Authorization: Bearer <secret>"):\n${key.secret}\n`);
    } else if (command === 'list') {
      for (const key of await listApiKeys(db, OPERATOR)) process.stdout.write(`${JSON.stringify(key)}\n`);
    } else {
      const key = await revokeApiKey(db, rest[0], OPERATOR);
      process.stdout.write(`revoked ${key.id} (${key.name})\n`);
    }
    return 0;
  } finally {
    await db.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof ServiceError || error instanceof ConfigError) {
      process.stderr.write(`keys: ${error.message}\n`);
      process.exit(error instanceof ConfigError ? 78 : 65);
    }
    process.stderr.write(`keys: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
