// Writes the OpenAPI document the server generates from its route schemas to openapi/openapi.json.
// `npm run openapi`; test/http/openapi.test.ts fails when the checked-in file differs.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { buildApp } from '../src/http/app.js';
import { PROJECT_ROOT } from '../src/paths.js';

export async function generateOpenapi(): Promise<string> {
  const app = await buildApp({ logger: pino({ level: 'silent' }), readiness: { check: async () => 'not serving' } });
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
