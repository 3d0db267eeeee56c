// Writes the OpenAPI document the server generates from its route schemas to openapi/openapi.json.
// `npm run openapi`; test/http/openapi.test.ts fails when the checked-in file differs.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { buildApp } from '../src/http/app.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { loadConfig } from '../src/config/index.js';
import type { ServiceContext } from '../src/service/context.js';

export async function generateOpenapi(): Promise<string> {
  // The export only reads route schemas; it serves no request, so it has no service context.
  const noContext = new Proxy({} as ServiceContext, {
    get() {
      throw new Error('the OpenAPI export serves no requests');
    },
  });
  const app = await buildApp({
    logger: pino({ level: 'silent' }),
    readiness: { check: async () => 'not serving' },
    ctx: noContext,
    api: loadConfig({}).api,
  });
  await app.ready();
  const text = `${JSON.stringify(app.swagger(), null, 2)}\n`;
  await app.close();
  return text;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const target = path.join(PROJECT_ROOT, 'openapi', 'openapi.json');
  await writeFile(target, await generateOpenapi());
  console.log(`wrote ${path.relative(process.cwd(), target)}`);
}
