// Writes src/openapi.d.ts, the types of the REST API, from openapi/openapi.json with
// openapi-typescript. `npm run client:generate` after `npm run openapi`;
// test/clients/typescript-client.test.ts fails when the checked-in file differs.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import openapiTS, { astToString, COMMENT_HEADER, type OpenAPI3 } from 'openapi-typescript';

const CLIENT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const OPENAPI_DOCUMENT = path.resolve(CLIENT_ROOT, '../../openapi/openapi.json');
export const GENERATED_TYPES = path.join(CLIENT_ROOT, 'src', 'openapi.d.ts');

export async function generateClientTypes(): Promise<string> {
  const document = JSON.parse(await readFile(OPENAPI_DOCUMENT, 'utf8')) as OpenAPI3;
  return `${COMMENT_HEADER}${astToString(await openapiTS(document))}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await writeFile(GENERATED_TYPES, await generateClientTypes());
  console.log(`wrote ${path.relative(process.cwd(), GENERATED_TYPES)}`);
}
