import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { BACKENDS } from '../helpers/backends.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';

/**
 * The Python client (clients/python) against the real service: its unittest suite runs with the
 * machine's python3 (standard library only), given the server's URL and an admin key.
 */

const CLIENT_DIR = path.join(PROJECT_ROOT, 'clients', 'python');
const TEST_FILE = path.join(CLIENT_DIR, 'tests', 'test_client.py');
/** The tests test_client.py defines; a run that reports fewer lost some (e.g. an import failure at discovery). */
const DEFINED_TESTS = (readFileSync(TEST_FILE, 'utf8').match(/^ {4}def test_/gm) ?? []).length;
const MINIMUM_TESTS = 22;
const RUN_TIMEOUT_MS = 280_000;

/** python3 on PATH, else Debian's /usr/bin/python3; 3.11 or newer. Missing: a failure saying how to install it, never a skip. */
function findPython(): string {
  for (const command of ['python3', '/usr/bin/python3']) {
    const probe = spawnSync(command, ['-c', 'import sys; print(sys.version_info >= (3, 11), sys.version.split()[0])'], { encoding: 'utf8' });
    if (probe.status !== 0) continue;
    const [recent, version] = probe.stdout.trim().split(' ');
    if (recent === 'True') return command;
    throw new Error(`The Python client needs Python 3.11 or newer; ${command} is ${version}.`);
  }
  throw new Error(
    'The Python client tests need python3 (3.11 or newer) on PATH or at /usr/bin/python3, and none was found' +
      `${process.env.CI === 'true' ? ' on this CI machine' : ''}. Install it with \`sudo apt-get install -y python3\` (Debian/Ubuntu).`,
  );
}

interface Run {
  code: number | null;
  output: string;
}

/** Runs a command to its end (asynchronously: the service answers it from this process), killed after RUN_TIMEOUT_MS. */
function run(command: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe.each(BACKENDS)('the Python client on the $name backend', (backend) => {
  let h: ApiHarness;

  beforeAll(async () => {
    h = await startApi(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  it(
    'passes its unittest suite against the live server',
    async () => {
      const python = findPython();
      expect(DEFINED_TESTS).toBeGreaterThanOrEqual(MINIMUM_TESTS);
      const { code, output } = await run(python, ['-m', 'unittest', 'discover', '-s', 'clients/python/tests', '-v'], {
        PROTOPRUNE_URL: `http://127.0.0.1:${h.service.httpPort}`,
        PROTOPRUNE_API_KEY: h.keys.admin,
        PYTHONPATH: [CLIENT_DIR, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter),
        PYTHONDONTWRITEBYTECODE: '1',
      });
      expect(code, output).toBe(0);
      const ran = /^Ran (\d+) tests? in /m.exec(output);
      expect(ran, output).not.toBeNull();
      expect(Number(ran![1]), output).toBe(DEFINED_TESTS);
      // "OK" alone: no test skipped or expected to fail.
      expect(output.trimEnd().split('\n').at(-1), output).toBe('OK');
    },
    RUN_TIMEOUT_MS + 10_000,
  );
});
