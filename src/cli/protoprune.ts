/**
 * The `protoprune` command (bin/protoprune.mjs runs this): a client of a running server, named by
 * --url or PROTOPRUNE_URL, with the key of --api-key or PROTOPRUNE_API_KEY. See docs/cli.md.
 */
import { run } from './program.js';

// `protoprune select … | head`: a reader that stops early is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

process.exitCode = await run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env });
