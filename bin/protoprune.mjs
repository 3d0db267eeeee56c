#!/usr/bin/env node
// The protoprune CLI. In a clone with dev dependencies it runs the TypeScript source through tsx,
// so it is never an out-of-date build; elsewhere (the Docker image, an install without dev
// dependencies) it runs the compiled CLI under dist/ (npm run build).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const source = new URL('../src/cli/protoprune.ts', import.meta.url);
const compiled = new URL('../dist/src/cli/protoprune.js', import.meta.url);

function tsxInstalled() {
  try {
    createRequire(import.meta.url).resolve('tsx/esm/api');
    return true;
  } catch {
    return false;
  }
}

if (existsSync(source) && tsxInstalled()) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  process.stderr.write('protoprune: no CLI to run: build it with `npm run build` (or install the dev dependencies)\n');
  process.exit(1);
}
